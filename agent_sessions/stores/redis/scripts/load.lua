-- Load sessions: their records and recent history windows, and (one node) their scopes.
-- KEYS: per session its record, history and window keys; then, to read the scopes, the app
-- scope: each session's user scope is then read too, its key built from the user hash in the
-- record (a single node only; on a cluster the caller reads the scopes).
-- ARGV[1] window   rows of history to return per session
-- Returns per session: the record (false if absent), the window "<16-digit first seq><rows>"
-- ('' if none), the user scope (a flat HGETALL list, empty when not read); then the app scope.
local window = tonumber(ARGV[1])
local count = math.floor(#KEYS / 3)
local scopes = #KEYS > 3 * count
local out = {}
for i = 1, count do
  local rec_key, hist_key, win_key = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local rec = redis.call('GET', rec_key)
  -- Only the two header fields a read needs: a full `header` parse costs more than the GET.
  local seq, uhash
  if rec then seq, uhash = string.match(rec, '^R2 %d+ (%d+) %S+ %S+ %S+ (%S+) ') end
  -- LEGACY_HEADER: no user hash in an R1 record, so the store reads its user scope itself (a
  -- second round trip, until the record's next save or touch rewrites it as R2).
  if rec and not seq then seq = string.match(rec, '^R1 %d+ (%d+) ') end
  seq = tonumber(seq)
  local rows = ''
  if seq and seq > 0 and window > 0 then
    local win = redis.call('GET', win_key)
    local first = win and tonumber(string.sub(win, 1, 16))
    local held = first and seq - first + 1
    if first and (held >= window or first == 1 or redis.call('LLEN', hist_key) <= held) then
      rows = win
    else
      local list = redis.call('LRANGE', hist_key, -window, -1)
      if #list > 0 then rows = string.format('%016d', seq - #list + 1) .. table.concat(list) end
    end
  end
  local user_scope = {}
  if scopes and uhash and uhash ~= '-' then
    user_scope = redis.call('HGETALL', user_key(split_key(rec_key), uhash, 'scope'))
  end
  out[#out + 1] = rec
  out[#out + 1] = rows
  out[#out + 1] = user_scope
end
if scopes then out[#out + 1] = redis.call('HGETALL', KEYS[#KEYS]) end
return out
