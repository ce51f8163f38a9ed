-- A page of a live session's history.
-- KEYS[1] record, KEYS[2] history.
-- ARGV[1] now, ARGV[2] limit, ARGV[3] before (rows with a smaller seq; '' = the newest).
-- Returns {ABSENT} (missing or expired), {CORRUPT}, or {DONE, history seq, rows...} oldest first.
local now, limit, before = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local rec = redis.call('GET', KEYS[1])
if not rec then return {ABSENT} end
local h = header(rec)
if not h then return {CORRUPT} end
if not live(h, now) then return {ABSENT} end
local seq = tonumber(h.seq)
local last = seq
if before ~= '' then last = math.min(last, tonumber(before) - 1) end
local first = math.max(seq - redis.call('LLEN', KEYS[2]) + 1, last - limit + 1)
if last < first then return {DONE, h.seq} end
local rows = redis.call('LRANGE', KEYS[2], first - seq - 1, last - seq - 1)
table.insert(rows, 1, h.seq)
table.insert(rows, 1, DONE)
return rows
