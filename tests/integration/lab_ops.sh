# lab_ops.sh: helpers for the operations tests (metrics, dualrelayctl), sourced after lab.sh.
#
#   labo_metrics_fetch URL FILE   GET URL from inside RELAY into FILE (body) and FILE.headers;
#                                 prints the HTTP status code
#   labo_prom_parse FILE          parse FILE with a Prometheus text-format parser and print
#                                 one "NAME{LABEL="V",...} VALUE" line per sample, labels
#                                 sorted, value as an integer when it is one; fails (and
#                                 prints why) when the parser rejects the text
#   labo_prom_value FILE SAMPLE   the value of one sample in labo_prom_parse's output, or
#                                 "missing"
#
# The parser is prometheus_client.parser from python3-prometheus-client (Debian), under
# whichever python3 can import it; else promtool ("check metrics", the linter Prometheus
# itself ships) followed by a strict line reader.  Neither present is a failure, as for
# every other lab tool: contrib/install-deps.sh installs the Python one.

LABO_PROM_PY=""

labo_metrics_fetch() {
	lab_relay curl -sS --max-time 10 -D "$2.headers" -o "$2" -w '%{http_code}' "$1"
}

# The first python3 on PATH that has prometheus_client, else Debian's own interpreter.
labo_prom_find() {
	local py
	[ -n "$LABO_PROM_PY" ] && return 0
	for py in python3 /usr/bin/python3; do
		if command -v "$py" >/dev/null 2>&1 &&
			"$py" -c 'import prometheus_client.parser' 2>/dev/null; then
			LABO_PROM_PY=$py
			return 0
		fi
	done
	command -v promtool >/dev/null 2>&1 && return 0
	lab_fail "no Prometheus text parser: install python3-prometheus-client (contrib/install-deps.sh) or promtool"
}

labo_prom_parse() {
	labo_prom_find
	if [ -n "$LABO_PROM_PY" ]; then
		"$LABO_PROM_PY" - "$1" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1], encoding="utf-8").read()
seen = set()
for fam in text_string_to_metric_families(text):
    # Counters must be exposed as NAME_total, and each family once.
    assert fam.name not in seen, "family %s twice" % fam.name
    seen.add(fam.name)
    assert fam.type in ("counter", "gauge"), (fam.name, fam.type)
    assert fam.documentation, "no HELP for %s" % fam.name
    for s in fam.samples:
        if fam.type == "counter":
            assert s.name == fam.name + "_total", (fam.name, s.name)
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        v = int(s.value) if float(s.value).is_integer() else s.value
        print("%s%s %s" % (s.name, "{%s}" % labels if labels else "", v))
PY
	else
		promtool check metrics <"$1" >&2 || return 1
		# promtool only lints: read the samples strictly here (no timestamps, no escapes).
		python3 - "$1" <<'PY'
import re, sys
line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([0-9]+(?:\.[0-9]+)?)$')
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    if line.startswith("#"):
        continue
    m = line_re.match(line)
    assert m, "bad sample line: %r" % line
    labels = sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', m.group(2) or ""))
    v = float(m.group(3))
    v = int(v) if v.is_integer() else v
    print("%s%s %s" % (m.group(1),
          "{%s}" % ",".join('%s="%s"' % kv for kv in labels) if labels else "", v))
PY
	fi
}

labo_prom_value() {
	awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print "missing" }' "$1"
}
