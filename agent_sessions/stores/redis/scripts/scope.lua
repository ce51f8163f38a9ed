-- Apply one scope change outside a session's save (a cluster's saves, import, migration).
-- KEYS[1] the scope hash. ARGV: the change, as `apply_scope` reads it.
-- Returns DONE.
apply_scope(KEYS[1], 1)
return DONE
