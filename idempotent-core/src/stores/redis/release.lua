-- KEYS[1] record; ARGV owner, epoch. The tombstone keeps its epoch and its expiry.
-- Replies `{'ok'}`, `{'lost'}` or `{'corrupt', reason}`.
local key = KEYS[1]
local record = redis.pcall('HMGET', key, 'state', 'owner', 'epoch')
if record.err then return {'corrupt', record.err} end
if record[1] ~= 'in_progress' or record[2] ~= ARGV[1] or record[3] ~= ARGV[2] then
  return {'lost'}
end
redis.call('HSET', key, 'state', 'released')
return {'ok'}
