-- KEYS: candidate records from one `SCAN` step. Deletes those whose `expires_at` passed and
-- replies how many. Keys that are not readable records are left alone.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local removed = 0
for _, key in ipairs(KEYS) do
  local expires_at = redis.pcall('HGET', key, 'expires_at')
  if type(expires_at) == 'string' then
    local at = tonumber(expires_at)
    if at and at <= now then
      redis.call('DEL', key)
      removed = removed + 1
    end
  end
end
return removed
