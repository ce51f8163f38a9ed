-- Move a live session's last access and expiry forward, without a version bump.
-- Both only move forward, so a delayed touch never undoes a newer save or touch: the expiry is
-- replaced only by a later one or by '-' (none), and a stored '-' by any; otherwise the record
-- keeps its expiry and every key its TTL (and the indexes their scores).
-- KEYS[1] record, KEYS[2] history, KEYS[3] window; KEYS[4] the expiry shard on a single node,
-- where the script re-scores the indexes itself (as in write.lua).
-- ARGV[1] now, ARGV[2] last_accessed_at, ARGV[3] expiry ('-' = none), ARGV[4] pttl (ms, 0 = none),
-- ARGV[5], ARGV[6] the owner and its user hash for `known_hash` ('' '').
-- Returns {ABSENT} (missing or expired), {CORRUPT}, {LEGACY, owner} (nothing done), or
-- {DONE, user hash or '-', moved}, where moved = 1 when the expiry moved and the caller has to
-- re-score the indexes. A rewritten record is R2.
local now, accessed, expiry, pttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local rec = redis.call('GET', KEYS[1])
if not rec then return {ABSENT} end
local h = header(rec)
if not h then return {CORRUPT} end
if not live(h, now) then return {ABSENT} end
if tonumber(h.accessed) >= tonumber(accessed) then accessed = h.accessed end
local moved = expiry == '-' or h.expiry == '-' or tonumber(expiry) > tonumber(h.expiry)
if not moved then expiry = h.expiry end
-- Nothing to write: an R1 record stays as it is (its user hash, unknown here, is not needed).
if not moved and accessed == h.accessed then return {DONE, h.uhash or '-', 0} end
if not known_hash(rec, h) then return {LEGACY, owner(rec, h)} end
local value = table.concat({'R2', h.version, h.seq, accessed, expiry, h.token, h.uhash, h.ulen}, ' ')
  .. '\n' .. string.sub(rec, h.body)
if not moved then
  redis.call('SET', KEYS[1], value, 'KEEPTTL')
  return {DONE, h.uhash, 0}
end
if pttl > 0 then redis.call('SET', KEYS[1], value, 'PX', pttl) else redis.call('SET', KEYS[1], value) end
set_ttl(KEYS[2], pttl)
set_ttl(KEYS[3], pttl)
if KEYS[4] then
  h.expiry = expiry
  index(KEYS[1], KEYS[4], h)
  return {DONE, h.uhash, 0}
end
return {DONE, h.uhash, 1}
