-- KEYS[1] record; ARGV owner, fingerprint, lease ms, record ttl ms, retention ms.
-- Replies `{'acquired', epoch}`, `{'completed', epoch, payload, ms left}`,
-- `{'in_flight', ms left}`, `{'mismatch'}` or `{'corrupt', reason}`.
local owner, fp = ARGV[1], ARGV[2]
--[[read.lua]]
if exists then
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
