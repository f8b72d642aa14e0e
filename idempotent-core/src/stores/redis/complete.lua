-- KEYS[1] record; ARGV owner, epoch, payload, ttl ms, retention ms. A record this lease
-- already completed (a retried completion) is left as it is.
-- Replies `{'ok'}`, `{'lost'}` or `{'corrupt', reason}`.
local key = KEYS[1]
local record = redis.pcall('HMGET', key, 'state', 'owner', 'epoch')
if record.err then return {'corrupt', record.err} end
if record[2] ~= ARGV[1] or record[3] ~= ARGV[2] then return {'lost'} end
if record[1] == 'completed' then return {'ok'} end
if record[1] ~= 'in_progress' then return {'lost'} end
local time = redis.call('TIME')
local expires_at = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  + tonumber(ARGV[4])
redis.call('HSET', key, 'state', 'completed', 'payload', ARGV[3],
  'expires_at', string.format('%.0f', expires_at))
redis.call('PEXPIREAT', key, string.format('%.0f', expires_at + tonumber(ARGV[5])))
return {'ok'}
