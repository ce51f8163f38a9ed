-- Delete a session (record, history, window and, on one node, its index entries).
-- With an expected version the header is checked and the keys deleted in this one step, so a
-- save racing a `rename` either lands first (nothing deleted) or finds the session gone.
-- KEYS[1] record, KEYS[2] history, KEYS[3] window, KEYS[4] expiry shard.
-- ARGV[1] expected version ('' = whatever the version), ARGV[2] indexes ('here' | 'caller'),
-- ARGV[3] prefix.
-- Returns {ABSENT}, {CONFLICT} (another version: nothing deleted), {CORRUPT} (an unreadable
-- header with an expected version: nothing deleted), {DONE, user hash or '-'} deleted, or
-- {DONE} deleted with an unreadable header (its index entries are left to cleanup).
local expected, here, prefix = ARGV[1], ARGV[2] == 'here', ARGV[3]
local rec = redis.call('GET', KEYS[1])
local h = rec and header(rec)
if expected ~= '' and rec then
  if not h then return {CORRUPT} end
  if h.version ~= expected then return {CONFLICT} end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if not rec then return {ABSENT} end
if not h then return {DONE} end
if here then unindex(prefix, KEYS[4], session_id(KEYS[1]), h) end
return {DONE, h.uhash}
