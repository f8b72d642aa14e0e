-- KEYS[1] record; ARGV owner, fingerprint, lease ms, record ttl ms, retention ms.
-- Replies `{'acquired', epoch}`, `{'completed', epoch, payload, ms left}`,
-- `{'in_flight', ms left}`, `{'mismatch'}` or `{'corrupt', reason}`.
local key, owner, fp = KEYS[1], ARGV[1], ARGV[2]
local record = redis.pcall('HMGET', key, 'v', 'state', 'owner', 'epoch', 'fingerprint',
  'lease_until', 'expires_at', 'payload')
if record.err then return {'corrupt', record.err} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- Microseconds since the Unix epoch: below 2^53 until the year 2255, exact in a Lua number.
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])

local epoch = 0
local version, state, holder, stored_fp, payload =
  record[1], record[2], record[3], record[5], record[8]
if not (version or state or holder or record[4] or stored_fp or record[6] or record[7]
    or payload) then
  if redis.call('EXISTS', key) == 1 then return {'corrupt', 'a hash without record fields'} end
else
  epoch = tonumber(record[4])
  local lease_until, expires_at = tonumber(record[6]), tonumber(record[7])
  if version ~= '1' then return {'corrupt', 'unknown record format version'} end
  if not epoch or epoch < 0 or epoch % 1 ~= 0 or epoch >= 9007199254740992 then
    return {'corrupt', 'invalid epoch'}
  end
  if not expires_at or expires_at % 1 ~= 0 then return {'corrupt', 'invalid expires_at'} end
  if stored_fp ~= fp and (type(stored_fp) ~= 'string' or #stored_fp ~= 64
      or string.find(stored_fp, '[^0-9a-f]')) then
    return {'corrupt', 'invalid fingerprint'}
  end
  if state == 'completed' then
    if not payload then return {'corrupt', 'completed record without payload'} end
  elseif state == 'in_progress' then
    if holder ~= owner and (type(holder) ~= 'string' or #holder ~= 32
        or string.find(holder, '[^0-9a-f]')) then
      return {'corrupt', 'invalid owner'}
    end
    if not lease_until or lease_until % 1 ~= 0 then return {'corrupt', 'invalid lease_until'} end
  elseif state ~= 'released' then
    return {'corrupt', 'unknown state'}
  end

  -- Live (not past its ttl) and not released: the record decides.
  if expires_at > now and state ~= 'released' then
    if state == 'completed' then
      if stored_fp ~= fp then return {'mismatch'} end
      return {'completed', epoch, payload, expires_at - now}
    end
    if holder == owner then
      -- The same owner's claim, retried: same epoch, lease renewed.
      local renewed = now + tonumber(ARGV[3])
      local until_ms = math.max(expires_at, renewed)
      redis.call('HSET', key, 'lease_until', string.format('%.0f', renewed),
        'expires_at', string.format('%.0f', until_ms))
      redis.call('PEXPIREAT', key, string.format('%.0f', until_ms + tonumber(ARGV[5])))
      return {'acquired', epoch}
    end
    if lease_until > now then
      if stored_fp ~= fp then return {'mismatch'} end
      return {'in_flight', lease_until - now}
    end
  end
  -- Released, expired, or a lease that ran out: taken over with the next epoch.
  if payload then redis.call('HDEL', key, 'payload') end
end

-- Above the previous epoch and at least the clock, so a key's epochs never repeat, not even
-- after Redis dropped the record (expiry, eviction, a flush).
epoch = math.max(epoch + 1, now_us)
if epoch >= 9007199254740992 then return {'corrupt', 'epoch at its maximum'} end
local expires_at = now + tonumber(ARGV[4])
redis.call('HSET', key, 'v', '1', 'state', 'in_progress', 'owner', owner,
  'epoch', string.format('%.0f', epoch), 'fingerprint', fp,
  'lease_until', string.format('%.0f', now + tonumber(ARGV[3])),
  'expires_at', string.format('%.0f', expires_at))
redis.call('PEXPIREAT', key, string.format('%.0f', expires_at + tonumber(ARGV[5])))
return {'acquired', epoch}
