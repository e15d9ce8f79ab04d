"""After a storm: kiln's own view (`kiln machines --output json`) against the
clients' (bench/storm --out). Every machine ready, each address held by one
MAC, every address as its client was ACKed. Exit 1 otherwise.

    python3 bench/check_storm.py MACHINES_JSON STORM_JSON N
"""
import json
import sys

ms = json.load(open(sys.argv[1]))
storm = json.load(open(sys.argv[2]))
n = int(sys.argv[3])
ready = sum(1 for m in ms if m["state"] == "ready")
ips = [m["ip"] for m in ms if m.get("ip")]
dup = len(ips) - len(set(ips))
mine = {m["mac"]: m["ip"] for m in storm}
mismatch = sum(1 for m in ms if m["mac"] in mine and m.get("ip") != mine[m["mac"]])
print(f"kiln: {len(ms)} machines, {ready} ready, {dup} duplicate addresses, {mismatch} whose address differs from the client's ACK")
sys.exit(0 if ready == n and dup == 0 and mismatch == 0 else 1)
