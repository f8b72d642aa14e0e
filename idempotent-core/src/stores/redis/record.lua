-- KEYS[1] record; ARGV mode: 'inspect', 'forget' (unless a live lease holds it) or 'force'.
-- Replies `{'absent'}`, `{'in_flight', ms left}` (forget refused: nothing changed),
-- `{'record', state, epoch, owner, fingerprint, lease ms left, ms left, payload}` (as it was
-- before a forget; owner and payload are '' where the record has none) or
-- `{'corrupt', reason}`. A forgotten record stays, released, so it keeps its epoch.
-- false, not nil: every stored field is checked in full, and a missing one is corrupt.
local owner, fp = false, false
--[[read.lua]]
-- Past its ttl a record is as good as absent, for a claim and here.
if not exists or expires_at <= now then return {'absent'} end
local lease_left = 0
if state == 'in_progress' and lease_until > now then lease_left = lease_until - now end
local mode = ARGV[1]
if mode ~= 'inspect' and state ~= 'released' then
  if mode ~= 'force' and lease_left > 0 then return {'in_flight', lease_left} end
  redis.call('HSET', key, 'state', 'released')
  if payload then redis.call('HDEL', key, 'payload') end
end
return {'record', state, epoch, holder or '', stored_fp, lease_left, expires_at - now,
  payload or ''}
