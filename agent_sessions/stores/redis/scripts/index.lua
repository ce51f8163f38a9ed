-- Cluster: a save's (or a moving touch's) updates in its user's slot, sent after the session's
-- own script succeeded: score the session in the user index and apply its user-scope change.
-- Unless ARGV[1] is '1' (an insert, or a session just bound to this user) only for a session
-- still in the index: one erased or deleted meanwhile is not indexed again, nor its scope
-- change applied, so a save racing `erase_user` leaves nothing behind.
-- KEYS[1] the user index, KEYS[2] the user scope. ARGV[1] '1' to add, ARGV[2] the session id,
-- ARGV[3] its score; then the scope change as `apply_scope` reads it, or nothing.
-- Returns DONE, or ABSENT (not in the index: nothing done).
if ARGV[1] ~= '1' and not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return ABSENT end
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[2])
if #ARGV > 3 then apply_scope(KEYS[2], 4) end
return DONE
