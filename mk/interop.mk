# Interop tier: independent TLS stacks (nginx, curl, OpenSSL 3.0, Node.js 26, Go 1.27) for
# tests/integration/test_interop*.py. `make test` installs them first (TEST_DEPS).

interop-deps: ## install the interop peers: nginx, curl, openssl (apt), Node.js 26 (npm), Go 1.27 peer
	bash scripts/interop-deps.sh

TEST_DEPS += interop-deps

.PHONY: interop-deps
