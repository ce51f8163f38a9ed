-- Cleanup of one session found in the expiry index: delete it if it is expired at `now`.
-- KEYS[1] record, KEYS[2] history, KEYS[3] window. ARGV[1] now; ARGV[2], ARGV[3] for `known_hash`.
-- Returns {ABSENT} (the record is gone: Redis expired it; its history is deleted too),
-- {CORRUPT}, {LEGACY, owner} (nothing done), {DONE, user hash or '-'} deleted, or
-- {LIVE, user hash or '-', expiry} still live.
local rec = redis.call('GET', KEYS[1])
if not rec then
  redis.call('DEL', KEYS[2], KEYS[3])
  return {ABSENT}
end
local h = header(rec)
if not h then return {CORRUPT} end
if not known_hash(rec, h) then return {LEGACY, owner(rec, h)} end
if live(h, tonumber(ARGV[1])) then return {LIVE, h.uhash, h.expiry} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {DONE, h.uhash}
