-- KEYS[1] record; ARGV owner, epoch, lease ms, retention ms.
-- Replies `{'ok'}`, `{'lost'}` or `{'corrupt', reason}`.
local key = KEYS[1]
local record = redis.pcall('HMGET', key, 'state', 'owner', 'epoch', 'expires_at')
if record.err then return {'corrupt', record.err} end
if record[1] ~= 'in_progress' or record[2] ~= ARGV[1] or record[3] ~= ARGV[2] then
  return {'lost'}
end
local time = redis.call('TIME')
local renewed = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  + tonumber(ARGV[3])
local until_ms = math.max(tonumber(record[4]) or 0, renewed)
redis.call('HSET', key, 'lease_until', string.format('%.0f', renewed),
  'expires_at', string.format('%.0f', until_ms))
redis.call('PEXPIREAT', key, string.format('%.0f', until_ms + tonumber(ARGV[4])))
return {'ok'}
