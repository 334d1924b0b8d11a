// Package deploy holds vipd's deployment files: the systemd unit, the
// static-pod manifest, example configs, Prometheus rules and the Grafana
// dashboard. It has no code; its test checks that those files agree with
// the code: every example loads, and every metric the rules and the
// dashboard query is one the daemon exports.
package deploy
