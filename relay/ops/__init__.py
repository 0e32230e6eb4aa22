"""The operator's view of a node: the HTTP port, metrics, logs and the self-test page.

Owns the operator HTTP app (`http_app`, served by `http_server`, routes chosen by
`operator_routes`), the Prometheus metrics read from the node's counters (`metrics`),
log configuration with secrets redacted (`logs`) and `/selftest` (`selftest`).
"""
