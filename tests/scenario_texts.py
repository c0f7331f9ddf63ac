"""Scenario texts that several test files (web and end-to-end) explore."""

from bench.bundle_bench import WP_1G

# Four actors: far more states than a small exploration limit.
WIDE = """
name = "four actors, four pages"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = 4
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000", "write 0x8000_1000", "read 0x8000_2000"]
[[actor]]
name = "vcpu1"
kind = "vcpu"
do = ["write 0x8000_2000", "read 0x8000_3000", "write 0x8000_0000"]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 16K", "age 0x8000_0000 16K"]
[[actor]]
name = "host1"
kind = "host"
do = ["age 0x8000_0000 16K"]
"""

# Three actors: 79,522 states, 9,535,360,195,439,978,008,223,968,594,754 interleavings
# (far above 2^53).
MEDIUM = """
name = "three actors, four pages"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = 4
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000", "write 0x8000_1000", "read 0x8000_2000"]
[[actor]]
name = "vcpu1"
kind = "vcpu"
do = ["write 0x8000_2000"]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 16K", "age 0x8000_0000 16K"]
"""

# The bundle benchmark's 1 GiB write-protect racing a vCPU, at 4 MiB (1,024 leaves): after
# the vCPU's two accesses, one run of ~3,000 host0 steps (what run-length encoding is for).
WP_4M = (
    WP_1G.replace("wp 1 GiB", "wp 4 MiB")
    .replace("count = 262144", "count = 1024")
    .replace("0x9000_0000", "0x8020_0000")
    .replace("wp 0x8000_0000 1G", "wp 0x8000_0000 4M")
)
