-- Put in place of the marker line in claim.lua and record.lua (see scripts.rs): reads the
-- record at KEYS[1] and checks it, replying `{'corrupt', reason}` if it cannot be read.
-- Before it, the script sets `owner` and `fp`: the request's owner and fingerprint, or
-- false. A stored field equal to the request's is valid without a scan. After it: `key`, `now` (ms), `now_us`, `exists`, and for a record
-- that exists its fields, `epoch` (0 without one), `lease_until` and `expires_at` as numbers.
local key = KEYS[1]
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
local lease_until, expires_at
local exists = (version or state or holder or record[4] or stored_fp or record[6]
  or record[7] or payload) and true or false
if not exists then
  if redis.call('EXISTS', key) == 1 then return {'corrupt', 'a hash without record fields'} end
else
  epoch = tonumber(record[4])
  lease_until, expires_at = tonumber(record[6]), tonumber(record[7])
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
end
