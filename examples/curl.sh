#!/usr/bin/env bash
# A curl walkthrough of edgejudge serve: every route once, end to end, against a running server.
#
#   edgejudge serve --model NAME &            # listens on http://127.0.0.1:8765
#   examples/curl.sh                          # or: examples/curl.sh http://HOST:PORT
#
# EDGEJUDGE_SERVE_API_KEY: the server's API key, when it has one (sent as "Authorization: Bearer KEY", from
#   a temporary file of mode 600: never on curl's command line).
# MAX_TOKENS: the generation budget of the judgments below (default 64, to keep the walkthrough quick).
# Needs curl and base64; stops at the first request that fails (set -e, curl --fail-with-body).
set -euo pipefail
URL="${1:-${EDGEJUDGE_SERVE_URL:-http://127.0.0.1:8765}}"
URL="${URL%/}"
MAX_TOKENS="${MAX_TOKENS:-64}"
IMAGE="$(dirname "$0")/images/house-1.png"
AUTH=()
if [ -n "${EDGEJUDGE_SERVE_API_KEY:-}" ]; then
  # the key goes to curl in a file (-H @FILE), never in its arguments (which every user sees in ps); the
  # file is the caller's alone (mode 600) and removed when the walkthrough ends, however it ends
  HEADER_FILE="$(umask 077 && mktemp "${TMPDIR:-/tmp}/edgejudge-curl.XXXXXX")"
  trap 'rm -f "$HEADER_FILE"' EXIT
  printf 'Authorization: Bearer %s\n' "$EDGEJUDGE_SERVE_API_KEY" >"$HEADER_FILE"
  AUTH=(-H "@$HEADER_FILE")
fi
# every call: silent but errors shown, fail on an HTTP error (printing its JSON error body)
api() { curl -sS --fail-with-body ${AUTH[@]+"${AUTH[@]}"} "$@"; echo; }
step() { printf '\n== %s\n' "$*"; }

step "1. health (never needs the key): GET /healthz"
api "$URL/healthz"

step "2. the served judge: GET /v1/model"
api "$URL/v1/model"

step "3. the built-in rubrics: GET /v1/rubrics, and one of them: GET /v1/rubrics/vqa-helpfulness"
rubrics="$(api "$URL/v1/rubrics")"
echo "${rubrics:0:300} ..."
api "$URL/v1/rubrics/vqa-helpfulness"

step "4. judge one response, the image in base64 (JSON): POST /v1/judge"
# the body goes through stdin: an image of any size fits (a command line would not hold a large one)
IMAGE_B64="$(base64 <"$IMAGE" | tr -d '\n')"
printf '{"image": "%s", "image_name": "house-1.png", "instruction": "What colour is the roof?",
  "response": "The roof is red.", "reference": "The house has a red roof.", "rubric": "vqa-helpfulness",
  "temperature": 0, "max_tokens": %s}' "$IMAGE_B64" "$MAX_TOKENS" |
  api -H "Content-Type: application/json" --data-binary @- "$URL/v1/judge"

step "5. the same as a multipart upload (the image as a file part): POST /v1/judge"
api -F "image=@$IMAGE;type=image/png" -F "instruction=What colour is the roof?" \
  -F "response=The roof is red." -F "reference=The house has a red roof." -F "rubric=vqa-helpfulness" \
  -F "temperature=0" -F "max_tokens=$MAX_TOKENS" "$URL/v1/judge"

step "6. several responses and rubrics about one image in one call: POST /v1/judge/batch"
printf '{"image": "%s", "instruction": "What colour is the roof?",
  "responses": ["The roof is red.", "The roof is green."], "rubrics": ["vqa-helpfulness", "visual-grounding"],
  "temperature": 0, "max_tokens": %s}' "$IMAGE_B64" "$MAX_TOKENS" |
  api -H "Content-Type: application/json" --data-binary @- "$URL/v1/judge/batch"

step "7. the feedback streamed as it is generated (server-sent events): POST /v1/judge with stream"
printf '{"image": "%s", "instruction": "What colour is the roof?", "response": "The roof is red.",
  "temperature": 0, "max_tokens": 16, "stream": true}' "$IMAGE_B64" |
  api -N -H "Content-Type: application/json" --data-binary @- "$URL/v1/judge"

step "8. one response against every rule of a policy: GET /v1/policies, POST /v1/judge/policy"
policies="$(api "$URL/v1/policies")"
echo "${policies:0:300} ..."
printf '{"image": "%s", "response": "Barely used bike, 80 EUR, pick-up only.", "policy": "marketplace-listing",
  "temperature": 0, "max_tokens": %s}' "$IMAGE_B64" "$MAX_TOKENS" |
  api -H "Content-Type: application/json" --data-binary @- "$URL/v1/judge/policy"

step "9. a bad request gets a 4xx JSON error (the CLI's message): an unknown rubric"
answer="$(printf '{"image": "%s", "instruction": "q", "response": "r", "rubric": "no-such-rubric"}' "$IMAGE_B64" |
  curl -sS ${AUTH[@]+"${AUTH[@]}"} -w '\n%{http_code}' -H "Content-Type: application/json" --data-binary @- "$URL/v1/judge")"
status="${answer##*$'\n'}"
echo "${answer%$'\n'*}"
echo " -> HTTP $status"
case "$status" in 4*) ;; *) echo "expected a 4xx answer" >&2; exit 1 ;; esac

step "10. the server's counters (Prometheus text format): GET /metrics"
api "$URL/metrics" | grep -E '^edgejudge_(http_requests_total|queue_depth|in_flight|coalesced_jobs_total|prefix_reuse_ratio)'

printf '\nwalkthrough done: %s\n' "$URL"
