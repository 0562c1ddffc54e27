# The demo: a local control plane (kept in .local/), the operator in the background, examples/ applied
# into namespace demo, real mutual-TLS handshakes with the issued badges (ML-DSA-65 and ECDSA), and the
# migration act (one server holding a dual certificate, a post-quantum and a legacy client).
# See docs/demo.md.

demo: $(STAMP) controlplane cluster-up ## the whole demo: control plane, operator, examples, badge handshakes
	bash scripts/demo.sh up

demo-badges: $(STAMP) ## only the badge handshakes (after `make demo`)
	bash scripts/demo-badges.sh

demo-migration: $(STAMP) ## only the migration act: one dual server, a post-quantum and a legacy client
	$(BIN)/python scripts/demo-migration.py

demo-down: ## stop the demo's operator and control plane
	-bash scripts/demo.sh down
	$(MAKE) --no-print-directory cluster-down

.PHONY: demo demo-badges demo-migration demo-down
