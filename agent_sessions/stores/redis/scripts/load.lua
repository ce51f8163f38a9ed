-- Load sessions: their records and recent history windows, and (one node) their scopes.
-- KEYS: per session its record, history and window keys; then the app scope when scopes are read.
-- ARGV[1] window   rows of history to return per session
-- ARGV[2] count    number of sessions
-- ARGV[3] scopes   '1': also read the app scope and each session's user scope (its key built
--                  from the user hash in the record: a single node only), '0': no scopes
-- ARGV[4] prefix   the key prefix
-- Returns per session: the record (false if absent), the window "<16-digit first seq><rows>"
-- ('' if none), the user scope (a flat HGETALL list, empty when not read); then the app scope.
local window, count, scopes, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local out = {}
for i = 1, count do
  local rec_key, hist_key, win_key = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local rec = redis.call('GET', rec_key)
  local h = rec and header(rec)
  local rows = ''
  local seq = h and window > 0 and tonumber(h.seq)
  if seq and seq > 0 then
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
  if scopes and h and h.uhash ~= '-' then
    user_scope = redis.call('HGETALL', user_key(prefix, h.uhash, 'scope'))
  end
  out[#out + 1] = rec
  out[#out + 1] = rows
  out[#out + 1] = user_scope
end
if scopes then out[#out + 1] = redis.call('HGETALL', KEYS[3 * count + 1]) end
return out
