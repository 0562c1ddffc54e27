"""The MTLSCertificate reconcile: gather (reads), decide (policy), act (writes)."""
