"""`make bench`: omni under a real HTTP load generator (wrk) against a minimal baseline
app on the same Redis, with the results in bench/results/latest.json.

    bench/run.py        the orchestration: servers, scenarios, rounds, the table
    bench/traffic.py    pre-built raw HTTP requests, written to files wrk replays
    bench/replay.lua    the wrk script that replays such a file
    bench/wrk.py        running wrk and reading its result line
    bench/seed.py       seeding timelines fast, through omni's own Store and Lua script
    bench/baseline.py   the baseline: the least each job needs, on the same stack
    bench/cpu.py        the cores each process (and other work on the machine) used
    bench/profile.py    py-spy on omni for the scenarios that miss their targets
    bench/results.py    medians, ratios, the table and the JSON file
    bench/trust.py      fsync "always" against "everysec", and the soak
    bench/cluster.py    the cluster section: omni and the baseline on a local 3x2 cluster
    bench/redis_work.py Redis commands and CPU per request, from INFO before and after
    bench/processes.py  one omni process against two sharing a port (both sections)
"""
