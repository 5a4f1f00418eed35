#!/bin/sh
# A tour of the PerfectQueue HTTP API with curl: submit a task, lease it with a long-poll,
# heartbeat, finish it and read it back.
#
#   sh tour.sh BASE_URL QUEUE        e.g. sh tour.sh http://127.0.0.1:8000 default
#
# It needs only a POSIX shell, curl and sed. Every call states the HTTP status it expects; any
# other answer (or a connection failure) stops the tour with a non-zero exit status. The poll
# takes the oldest waiting task, so run the tour on a queue with no other waiting tasks.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 BASE_URL QUEUE" >&2
  exit 2
fi
Q="${1%/}/v1/queues/$2"
ID="tour-$(date +%s)-$$"   # a task id of our choosing: unique to this run
BODY=$(mktemp)
trap 'rm -f "$BODY"' EXIT

# call EXPECTED_STATUS METHOD PATH [JSON]: make one request, print its answer, and stop unless
# the status is the expected one. The answer's body is left in $BODY.
call() {
  expected=$1 method=$2 path=$3
  echo "> $method $path${4:+ $4}"
  if [ $# -ge 4 ]; then
    status=$(curl -sS -o "$BODY" -w '%{http_code}' -X "$method" -H 'content-type: application/json' \
      --data "$4" "$Q$path") || exit 1
  else
    status=$(curl -sS -o "$BODY" -w '%{http_code}' -X "$method" "$Q$path") || exit 1
  fi
  echo "< $status $(cat "$BODY")"
  echo
  if [ "$status" != "$expected" ]; then
    echo "expected HTTP $expected, got $status" >&2
    exit 1
  fi
}

# field NAME: the value of the last string field NAME in the JSON answer in $BODY: enough for the
# answers of this tour (a real client parses the JSON).
field() {
  sed -n "s/.*\"$1\" *: *\"\\([^\"]*\\)\".*/\\1/p" "$BODY"
}

# 1. Submit a task: an id (the idempotency key), a type, and a JSON object as its data.
#    201 {"id": ...}.
call 201 POST /submit "{\"id\": \"$ID\", \"type\": \"send_mail\", \"data\": {\"to\": \"ann@example.com\"}}"

# 2. The same id again is refused with 409 and an application/problem+json body whose "code" is
#    "already_exists": retrying a submit can never store a task twice.
call 409 POST /submit "{\"id\": \"$ID\", \"type\": \"send_mail\"}"
echo "code: $(field code)"
echo

# 3. A worker polls: up to "max" tasks, leased for "alive_time" seconds. "wait" makes it a
#    long-poll: with no task waiting, the service holds the request up to that many seconds and
#    answers as soon as one arrives. Each task comes with its "lease", a string of digits.
call 200 POST /poll '{"max": 1, "alive_time": 60, "wait": 5}'
if [ "$(field id)" != "$ID" ]; then
  echo "the poll did not return $ID (is another task waiting in this queue?)" >&2
  exit 1
fi
LEASE=$(field lease)
echo "lease: $LEASE"
echo

# 4. While working, the worker extends its lease (and may store progress in the task's data).
#    204, no body. A worker whose lease expired and was taken over gets 409 "preempted".
call 204 POST /heartbeat "{\"id\": \"$ID\", \"lease\": \"$LEASE\", \"alive_time\": 60, \"data\": {\"to\": \"ann@example.com\", \"step\": 2}}"

# 5. Done: finish the task (or give it back with /retry or /release). 204, no body.
call 204 POST /finish "{\"id\": \"$ID\", \"lease\": \"$LEASE\"}"

# 6. Read it back: it is finished, and is never delivered again.
call 200 GET "/tasks/$ID"
if [ "$(field status)" != finished ]; then
  echo "task $ID is not finished" >&2
  exit 1
fi
echo "task $ID is finished"
