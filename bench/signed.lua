-- wrk: a 200-byte signed POST to a signature-only location.
local secret = os.getenv("FLEET_DEVICE_SECRET") or "modernchabackdoor"
local body = '{"chip_id":"24AB3C91","mac_address":"24:6F:28:AB:3C:91","firmware_version":"car_wash_v1.00","pad":"' .. string.rep("x", 200 - 107) .. '"}'
local p = io.popen("printf '%s' '" .. body .. secret .. "' | sha256sum")
local sig = p:read("*a"):sub(1, 64); p:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-signature"] = sig
