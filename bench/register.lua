-- wrk: signed need-register from many distinct chips (SPEC section 4).
-- Usage: wrk -s bench/register.lua URL   (FLEET_DEVICE_SECRET in the env)
local secret = os.getenv("FLEET_DEVICE_SECRET") or "modernchabackdoor"
local n = 0

local function sha256_hex(s)
  local p = io.popen("printf '%s' '" .. s .. "' | sha256sum")
  local out = p:read("*a"); p:close()
  return out:sub(1, 64)
end

-- signatures are precomputed: wrk's Lua has no SHA-256 and the benchmark
-- measures the server, not the client
local bodies = {}
for i = 1, 200 do
  local b = string.format('{"chip_id":"BENCH%06d","mac_address":"24:6F:28:AB:3C:91","firmware_version":"car_wash_v1.00"}', i)
  bodies[i] = { b, sha256_hex(b .. secret) }
end

request = function()
  n = n % #bodies + 1
  local b = bodies[n]
  return wrk.format("POST", "/api/v1/devices/need-register",
                    { ["Content-Type"] = "application/json", ["x-signature"] = b[2] }, b[1])
end
