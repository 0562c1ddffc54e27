# The test node (issue #13): kube-scheduler, containerd, runc and a kubelet running real pods next to the
# test control plane, in a sealed network namespace (docs/node.md). `make test` installs Debian's
# containerd, runc, CNI plugins and mmdebstrap (node-deps) and builds the kubelet, kube-scheduler, pause
# and the images (node) through TEST_DEPS.

NODE_APT_PACKAGES := containerd runc containernetworking-plugins mmdebstrap gcc libc6-dev iproute2 util-linux

node-deps: ## install the node's runtime from apt: containerd, runc, CNI plugins, mmdebstrap, gcc
	@missing=""; for p in $(NODE_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "node-deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@containerd --version

node: $(STAMP) controlplane node-deps ## build kubelet, kube-scheduler, pause and the node's images (cached)
	bash e2e/node/build.sh
	$(BIN)/python -m mtls_operator.testing.images build

dockerfile: $(STAMP) ## write the Dockerfile from the operator image recipe (mtls_operator/testing/images.py)
	$(BIN)/python -m mtls_operator.testing.images dockerfile > Dockerfile
	@echo "wrote Dockerfile"

TEST_DEPS += node

.PHONY: node-deps node dockerfile
