-- One compare-and-set save (`SessionWrite`): insert, or update a live session at a version.
-- KEYS[1] record, KEYS[2] history, KEYS[3] window; on a single node KEYS[4] the expiry shard,
-- then one key per scope change: the script then also updates the user index, the expiry
-- shard and the scopes. Without KEYS[4] (a cluster: other slots) the caller does.
-- ARGV[1] now          the store clock (seconds)
-- ARGV[2] expected     the stored version required; '0' = insert
-- ARGV[3] value        the new record: header, user id, encoded record
-- ARGV[4] pttl         the keys' TTL in ms, 0 = none
-- ARGV[5] max_history  history rows kept
-- ARGV[6] window       the reader's history window (0: no window key)
-- ARGV[7] rows         the number of new history rows, then the rows
-- then the number of scope changes, then each change (see `apply_scope`; its key is KEYS[4 + n]),
-- then the previous owner and its user hash ('' ''), read by `known_hash` (an R1 record).
-- Returns DONE, ALREADY_APPLIED (this very write landed before: a re-sent save), CONFLICT
-- (an insert over an existing id, or another version), ABSENT (missing or expired), CORRUPT,
-- or {LEGACY, owner} (see `known_hash`: nothing done).
local now, expected, value, pttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local max_history, nrows = tonumber(ARGV[5]), tonumber(ARGV[7])
-- The window key holds the newest `keep` rows and is rebuilt once it would hold more than `cap`.
local keep = math.min(tonumber(ARGV[6]), max_history)
local cap = math.min(keep + math.max(8, math.floor(keep / 4)), max_history)
-- The fields of the new header the script needs (a full `header` parse costs more).
local new = {}
new.version, new.seq, new.expiry, new.token, new.uhash = string.match(
  value, '^R2 (%d+) (%d+) %S+ (%S+) (%S+) (%S+) ')
local rec = redis.call('GET', KEYS[1])
local old = rec and header(rec)
if rec then
  if not old then return CORRUPT end
  if old.version == new.version and old.token == new.token then return ALREADY_APPLIED end
  if expected == '0' then return CONFLICT end
  if not live(old, now) then return ABSENT end
  if old.version ~= expected then return CONFLICT end
  if KEYS[4] and not known_hash(rec, old) then return {LEGACY, owner(rec, old)} end
elseif expected ~= '0' then
  return ABSENT
else
  redis.call('DEL', KEYS[2], KEYS[3])
end
if pttl > 0 then redis.call('SET', KEYS[1], value, 'PX', pttl) else redis.call('SET', KEYS[1], value) end

local first_row, last_row = 8, 7 + nrows
local length = chunked('RPUSH', KEYS[2], first_row, last_row, 1000)
if length > max_history then redis.call('LTRIM', KEYS[2], -max_history, -1) end
if nrows > 0 then
  local seq = tonumber(new.seq)
  local head = rec and redis.call('GETRANGE', KEYS[3], 0, 15)
  local first = head and #head == 16 and tonumber(head)
  if keep == 0 then
    redis.call('DEL', KEYS[3])
  elseif first and seq - first + 1 <= cap then
    redis.call('APPEND', KEYS[3], table.concat(ARGV, '', first_row, last_row))
  else
    local rows = redis.call('LRANGE', KEYS[2], -keep, -1)
    redis.call('SET', KEYS[3], string.format('%016d', seq - #rows + 1) .. table.concat(rows))
  end
end
set_ttl(KEYS[2], pttl)
set_ttl(KEYS[3], pttl)

if KEYS[4] then
  if old and old.uhash ~= new.uhash then unindex(KEYS[1], KEYS[4], old) end
  index(KEYS[1], KEYS[4], new)
  local i = last_row + 2
  for n = 1, tonumber(ARGV[last_row + 1]) do i = apply_scope(KEYS[4 + n], i) end
end
return DONE
