-- Delete a session (record, history, window and, on one node, its index entries).
-- With an expected version the header is checked and the keys deleted in this one step, so a
-- save racing a `rename` either lands first (nothing deleted) or finds the session gone.
-- KEYS[1] record, KEYS[2] history, KEYS[3] window; KEYS[4] the expiry shard on a single node,
-- where the script removes the index entries itself (as in write.lua).
-- ARGV[1] expected version ('' = whatever the version); ARGV[2], ARGV[3] for `known_hash`.
-- Returns {ABSENT}, {CONFLICT} (another version: nothing deleted), {CORRUPT} (an unreadable
-- header with an expected version: nothing deleted), {LEGACY, owner} (nothing deleted),
-- {DONE, user hash or '-'} deleted, or {DONE} deleted with an unreadable header (its index
-- entries are left to cleanup).
local expected = ARGV[1]
local rec = redis.call('GET', KEYS[1])
local h = rec and header(rec)
if expected ~= '' and rec then
  if not h then return {CORRUPT} end
  if h.version ~= expected then return {CONFLICT} end
end
if h and not known_hash(rec, h) then return {LEGACY, owner(rec, h)} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if not rec then return {ABSENT} end
if not h then
  if KEYS[4] then redis.call('ZREM', list_key(KEYS[4]), select(2, split_key(KEYS[1]))) end
  return {DONE}
end
if KEYS[4] then unindex(KEYS[1], KEYS[4], h) end
return {DONE, h.uhash}
