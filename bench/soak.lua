-- wrk script for the soak (tests/test_soak.py, `make soak`): keyledger's mixed traffic at a fixed rate.
--
-- Of every 100 requests a wrk thread sends: 90 verify a key (GET /api/v1/auth/verify with an sk- key),
-- 9 report usage (POST /api/v1/usage/, SOAK_BATCH events with unique request ids, service token),
-- 1 manages keys with a user's JWT (rename a key and list the keys, in turn). SOAK_MIX="90,9,1"
-- changes the shares (verify, usage, lifecycle; they add up to 100).
--
-- The rate: each thread sends SOAK_RATE / SOAK_THREADS requests per second on a fixed schedule.
-- wrk's delay() hook is asked before every request and answers the time until the thread's next free
-- slot, so a slow answer holds up its own connection only, not the rate, as long as a connection is
-- free (connections >= rate x latency). A fixed pause per connection (bench/paced.lua) offers
-- C / (pause + latency) instead: there every slow answer lowers the rate, which then tells latency,
-- not throughput. A thread that falls behind catches up at most one second of missed slots.
-- CLOCK_MONOTONIC is Linux's 1.
--
-- Environment: SOAK_RATE, SOAK_THREADS (wrk's -t), SOAK_SECRETS (sk- keys, comma-separated),
-- SOAK_KEY_IDS (key ids for usage), SOAK_LIFECYCLE (jwt@key_id pairs, comma-separated),
-- SOAK_SERVICE_TOKEN, SOAK_RUN (request id prefix), SOAK_BATCH (events per usage request), SOAK_MIX.
-- done() prints one line `SOAK {json}` with the counts, the rate and the latency percentiles, and
-- `SOAK-BAD <status> <body>` for the first unexpected answer of each thread.

local function split(text, separator)
    local parts = {}
    for part in string.gmatch(text or "", "[^" .. separator .. "]+") do
        parts[#parts + 1] = part
    end
    return parts
end

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clock, soak_timespec *now);
]])
local CLOCK_MONOTONIC, timespec = 1, ffi.new("soak_timespec")
local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
    return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local interval_ms = 1000 * tonumber(os.getenv("SOAK_THREADS") or "1") / tonumber(os.getenv("SOAK_RATE") or "100")
local secrets = split(os.getenv("SOAK_SECRETS"), ",")
local key_ids = split(os.getenv("SOAK_KEY_IDS"), ",")
local service_token = os.getenv("SOAK_SERVICE_TOKEN")
local run = os.getenv("SOAK_RUN") or "soak"
local batch = tonumber(os.getenv("SOAK_BATCH") or "10")
local mix = split(os.getenv("SOAK_MIX") or "90,9,1", ",")
local lifecycle_share, usage_share = tonumber(mix[3]), tonumber(mix[2])
local lifecycle = {}
for _, pair in ipairs(split(os.getenv("SOAK_LIFECYCLE"), ",")) do
    local jwt, key_id = string.match(pair, "([^@]+)@(.+)")
    lifecycle[#lifecycle + 1] = {jwt = jwt, key_id = key_id}
end

local COUNTERS = {
    "sent_verify", "sent_usage", "sent_lifecycle", "ok_verify", "ok_usage", "ok_lifecycle",
    "accepted_events", "duplicate_events", "unexpected",
}
local KEYS = "/api/v1/accounts/user/api-keys/"

-- Runs once per thread, in the main script state: number the threads, keep them for done().
local threads = {}
function setup(thread)
    threads[#threads + 1] = thread
    thread:set("thread_id", #threads)
end

function init(args)
    n = 0
    for _, name in ipairs(COUNTERS) do
        _G[name] = 0
    end
end

function delay()
    local now = now_ms()
    next_slot = math.max((next_slot or now) + interval_ms, now - 1000)
    return math.max(0, next_slot - now)
end

local function verify_request()
    sent_verify = sent_verify + 1
    local secret = secrets[n % #secrets + 1]
    return wrk.format("GET", "/api/v1/auth/verify", {["Authorization"] = "Bearer " .. secret})
end

local function usage_request()
    sent_usage = sent_usage + 1
    local now = os.date("!%Y-%m-%dT%H:%M:%SZ")
    local events = {}
    for i = 1, batch do
        events[i] = string.format(
            '{"request_id":"%s-t%d-%d-%d","key_id":"%s","occurred_at":"%s","cost_chf":"0.000150",'
                .. '"units":812,"endpoint":"/v1/chat/completions","model":"soak"}',
            run, thread_id, n, i, key_ids[(n + i) % #key_ids + 1], now)
    end
    local headers = {["Authorization"] = "Bearer " .. service_token, ["Content-Type"] = "application/json"}
    return wrk.format("POST", "/api/v1/usage/", headers, '{"events":[' .. table.concat(events, ",") .. "]}")
end

local function lifecycle_request()
    local turn = sent_lifecycle  -- rename, list, rename, list … going round the users every two
    sent_lifecycle = sent_lifecycle + 1
    local user = lifecycle[math.floor(turn / 2) % #lifecycle + 1]
    local headers = {["Authorization"] = "Bearer " .. user.jwt, ["Content-Type"] = "application/json"}
    if turn % 2 == 0 then
        local body = string.format('{"name":"soak %d-%d"}', thread_id, n)
        return wrk.format("PATCH", KEYS .. user.key_id .. "/update/", headers, body)
    end
    return wrk.format("GET", KEYS, headers)
end

function request()
    n = n + 1
    local slot = n % 100
    if slot < lifecycle_share then
        return lifecycle_request()
    elseif slot < lifecycle_share + usage_share then
        return usage_request()
    end
    return verify_request()
end

-- Responses are not matched to requests (a thread's connections answer in any order): each kind
-- is told by its status and body.
function response(status, headers, body)
    if status == 200 and string.find(body, '"valid":true', 1, true) then
        ok_verify = ok_verify + 1
    elseif status == 202 then
        ok_usage = ok_usage + 1
        accepted_events = accepted_events + tonumber(string.match(body, '"accepted":%s*(%d+)') or "0")
        duplicate_events = duplicate_events + tonumber(string.match(body, '"duplicates":%s*(%d+)') or "0")
    elseif status == 200 then
        ok_lifecycle = ok_lifecycle + 1
    else
        unexpected = unexpected + 1
        if bad_answer == nil then
            bad_answer = status .. " " .. string.sub(body or "", 1, 300)
        end
    end
end

function done(summary, latency, requests)
    local totals = {}
    for _, name in ipairs(COUNTERS) do
        totals[name] = 0
        for _, thread in ipairs(threads) do
            totals[name] = totals[name] + (thread:get(name) or 0)
        end
    end
    for _, thread in ipairs(threads) do
        local bad = thread:get("bad_answer")
        if bad then
            io.write("SOAK-BAD " .. string.gsub(bad, "\n", " ") .. "\n")
        end
    end
    local e = summary.errors
    local fields = {
        string.format('"requests":%d', summary.requests),
        string.format('"duration_s":%.3f', summary.duration / 1e6),
        string.format('"rate":%.1f', summary.requests / (summary.duration / 1e6)),
        string.format('"socket_errors":%d', e.connect + e.read + e.write + e.timeout),
        string.format('"status_errors":%d', e.status),
        string.format('"p50_ms":%.3f', latency:percentile(50) / 1000),
        string.format('"p99_ms":%.3f', latency:percentile(99) / 1000),
        string.format('"p999_ms":%.3f', latency:percentile(99.9) / 1000),
        string.format('"max_ms":%.3f', latency.max / 1000),
    }
    for _, name in ipairs(COUNTERS) do
        fields[#fields + 1] = string.format('"%s":%d', name, totals[name])
    end
    io.write("SOAK {" .. table.concat(fields, ",") .. "}\n")
end
