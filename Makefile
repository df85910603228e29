# moe-operator: build, generate, test.
#
# Tools are pinned and built from the Go module proxy into a cache outside the clone
# ($(TOOLS_DIR)); nothing here touches go.mod.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/moe-operator
TOOLS_DIR ?= $(CACHE_DIR)/bin

CONTROLLER_GEN_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(TOOLS_DIR)/controller-gen-$(CONTROLLER_GEN_VERSION)

# helm, for the chart tests (test/chart) and `make deploy`.
HELM_VERSION ?= v3.22.0
HELM ?= $(TOOLS_DIR)/helm-$(HELM_VERSION)

# Kubernetes version of the envtest control plane (built by hack/setup-envtest.sh).
ENVTEST_K8S_VERSION ?= 1.37.2
export ENVTEST_K8S_VERSION

# Images. docker-build is for users who have Docker; CI builds none.
IMG ?= ghcr.io/moe-operator/moe-operator:dev
ENGINE_IMG ?= ghcr.io/moe-operator/moe-engine:dev
ENGINE_GPU_IMG ?= ghcr.io/moe-operator/moe-engine:dev-vulkan
CONTAINER_TOOL ?= docker

# Packages `make test` runs; the whole module by default.
TEST_PKGS ?= ./...
TEST_FLAGS ?=
CGO_ON := $(shell go env CGO_ENABLED)

# Arguments for `make run`.
RUN_ARGS ?=

GOWORK := off
export GOWORK

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-16s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods for the API types and the Vulkan backend's SPIR-V (needs glslc: make vulkan).
	$(CONTROLLER_GEN) object paths="./api/..."
	hack/gen-shaders.sh

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC manifests, sync them into the Helm chart, regenerate docs/crd-reference.md.
	$(CONTROLLER_GEN) crd:allowDangerousTypes=true rbac:roleName=manager-role paths="./api/...;./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/sync-chart.sh config charts/moe-operator
	go run ./hack/crd-reference > docs/crd-reference.md

.PHONY: crd-reference
crd-reference: ## Regenerate docs/crd-reference.md from the API types.
	go run ./hack/crd-reference > docs/crd-reference.md

.PHONY: fmt
fmt: ## Run gofmt on the operator's packages.
	gofmt -l -w api controllers cmd/manager hack

.PHONY: vet
vet: ## Run go vet on the operator's packages.
	go vet ./api/... ./controllers/... ./cmd/manager/... ./hack/...

.PHONY: verify
verify: $(CONTROLLER_GEN) ## Fail when generated code, CRDs, RBAC, chart copies or docs are stale, go.mod is not tidy, or code is unformatted.
	CONTROLLER_GEN=$(CONTROLLER_GEN) hack/verify-generated.sh
	hack/verify-tidy.sh
	go run ./hack/image dockerfiles --check
	@unformatted=$$(gofmt -l api controllers cmd/manager hack); \
	if [[ -n "$$unformatted" ]]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

##@ Test

.PHONY: vulkan
vulkan: ## Install (once, from Debian) the Vulkan loader, Mesa's lavapipe, the validation layers and glslc that the GPU backend's tests and shaders need.
	@hack/setup-vulkan.sh

.PHONY: envtest
envtest: ## Build (once) the kube-apiserver and etcd envtest uses; prints their folder.
	@hack/setup-envtest.sh

# The engine's parity tests read llama.cpp through node-llama-cpp in test/reference.
REFERENCE_STAMP := test/reference/node_modules/.package-lock.json
$(REFERENCE_STAMP): test/reference/package.json test/reference/package-lock.json
	cd test/reference && npm ci --no-audit --no-fund --ignore-scripts --omit=optional
	touch $@

.PHONY: reference
reference: $(REFERENCE_STAMP) ## Install the npm packages the engine's parity tests use.

# The server's API test runs the official openai npm client pinned in test/openai.
OPENAI_CLIENT_STAMP := test/openai/node_modules/.package-lock.json
$(OPENAI_CLIENT_STAMP): test/openai/package.json test/openai/package-lock.json
	cd test/openai && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

.PHONY: openai-client
openai-client: $(OPENAI_CLIENT_STAMP) ## Install the openai npm client the server's API test uses.

.PHONY: test
test: reference openai-client vulkan $(HELM) ## Run the tests (envtest control plane and helm included) for TEST_PKGS (default ./...).
	assets="$$(hack/setup-envtest.sh)"; \
	KUBEBUILDER_ASSETS="$$assets" MOE_REQUIRE_ENVTEST=1 HELM=$(HELM) MOE_REQUIRE_HELM=1 go test $(TEST_FLAGS) $(TEST_PKGS)
	@# The portable kernels (arm64 and other CPUs without AVX2) as the main path, not only beside the assembly.
	$(if $(filter ./...,$(TEST_PKGS)),go test $(TEST_FLAGS) -tags purego ./engine/tensor ./engine/model)
	@# The engine's concurrent parts under the race detector (it needs cgo, so a C compiler): the worker pool, the batching scheduler, the server, downloads.
	$(if $(filter ./...,$(TEST_PKGS)),$(if $(filter 1,$(CGO_ON)),go test $(TEST_FLAGS) -race ./engine/tensor ./engine/scheduler ./engine/server ./engine/source,@echo "make test: no C compiler (CGO_ENABLED=0), so the race-detector pass is skipped"))

# Every fuzz target and its package. `make fuzz` runs each for FUZZTIME (the
# GGUF reader, the parser users' files meet first, for at least 30 s).
FUZZTIME ?= 30s
FUZZ_TARGETS := \
	FuzzReadGGUF:./engine/gguf \
	FuzzParseHeader:./engine/safetensors \
	FuzzEncodeDecodeRoundTrip:./engine/tokenizer \
	FuzzLoadTokenizerJSON:./engine/tokenizer \
	FuzzChunkedEncodingMatchesTheWholeText:./engine/tokenizer \
	FuzzChatTemplate:./engine/tokenizer \
	FuzzCompileSchema:./engine/grammar \
	FuzzRegex:./engine/grammar \
	FuzzConfigFromHF:./engine/model \
	FuzzDotEqualsReference:./engine/tensor \
	FuzzDecodeCompletionRequest:./engine/server \
	FuzzDecodeChatRequest:./engine/server \
	FuzzRequestToAdmission:./engine/server \
	FuzzParseEngineMetrics:./controllers \
	FuzzParsePullLog:./controllers

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s).
	for t in $(FUZZ_TARGETS); do \
		name=$${t%%:*}; pkg=$${t#*:}; \
		echo "== $$name ($$pkg, $(FUZZTIME))"; \
		go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
	done

BENCH ?= .
BENCHTIME ?= 1s
.PHONY: bench
bench: ## Run the engine's Go benchmarks (kernels, forward pass); BENCH and BENCHTIME filter.
	go test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) ./engine/tensor ./engine/model

.PHONY: soak
soak: ## 64 streams against moe serve for 30 minutes: RSS and goroutines must stay flat, no error (hack/soak.sh; DURATION, CONCURRENCY).
	hack/soak.sh

.PHONY: bench-llamacpp
bench-llamacpp: reference ## Compare moe bench with llama.cpp on the mini model (hack/bench-vs-llamacpp.sh).
	hack/bench-vs-llamacpp.sh

##@ Build

.PHONY: build
build: ## Build the manager binary into bin/manager.
	CGO_ENABLED=0 go build -trimpath -o bin/manager ./cmd/manager

.PHONY: run
run: ## Run the manager against the cluster in the current kubeconfig (install the CRDs first: make install).
	go run ./cmd/manager --engine-image=$(ENGINE_IMG) $(RUN_ARGS)

.PHONY: install
install: ## Apply the CRDs to the cluster in the current kubeconfig (needs kubectl).
	kubectl apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: ## Delete the CRDs (and every MixtralDeployment) from the current cluster.
	kubectl delete --ignore-not-found -f config/crd/bases

.PHONY: images
images: ## Build the operator, engine and Vulkan engine images without Docker (dist/images/*.tar, docker archives).
	go run ./hack/image build --ref operator=$(IMG) --ref engine=$(ENGINE_IMG) --ref engine-vulkan=$(ENGINE_GPU_IMG) operator engine engine-vulkan

.PHONY: docker-build
docker-build: ## Build the operator and engine images with Docker (or CONTAINER_TOOL); same images as `make images`.
	$(CONTAINER_TOOL) build -t $(IMG) -f Dockerfile.manager .
	$(CONTAINER_TOOL) build -t $(ENGINE_IMG) -f Dockerfile.engine .
	$(CONTAINER_TOOL) build -t $(ENGINE_GPU_IMG) -f Dockerfile.engine-vulkan .

.PHONY: dockerfiles
dockerfiles: ## Regenerate Dockerfile.manager, Dockerfile.engine and Dockerfile.engine-vulkan from hack/image/images.go.
	go run ./hack/image dockerfiles

##@ Local cluster, demo and end-to-end tests

.PHONY: demo
demo: $(HELM) ## Bring up the local cluster (or use KUBECONFIG's), install the operator, serve a small model, chat with it.
	HELM=$(HELM) IMG=$(IMG) ENGINE_IMG=$(ENGINE_IMG) hack/demo.sh

.PHONY: demo-clean
demo-clean: ## Delete the demo's namespace and model volume.
	hack/demo.sh clean

.PHONY: cluster-up
cluster-up: ## Bring up the local single-node cluster (root; builds Kubernetes once, ~20-33 min).
	hack/local-cluster/up

.PHONY: cluster-down
cluster-down: ## Tear down the local cluster and restore the host (root).
	hack/local-cluster/down

.PHONY: cluster-status
cluster-status: ## Show the local cluster's daemons and node.
	@if [[ -x /var/lib/moe-local-cluster/bin/local-cluster ]]; then /var/lib/moe-local-cluster/bin/local-cluster status; else echo "local cluster: down"; fi

.PHONY: deploy
deploy: $(HELM) ## Build and load the images and install the chart into the local cluster (or KUBECONFIG's).
	source hack/lib/deploy.sh; HELM=$(HELM); deploy::cluster; deploy::images; deploy::operator

.PHONY: undeploy
undeploy: $(HELM) ## Uninstall the chart (the CRD and MixtralDeployments stay).
	if [[ -z "$${KUBECONFIG:-}" && -f /var/lib/moe-local-cluster/kubeconfig ]]; then export KUBECONFIG=/var/lib/moe-local-cluster/kubeconfig; fi; \
	$(HELM) uninstall moe-operator --namespace moe-system --ignore-not-found --wait

E2E_FLAGS ?= -v -timeout 45m
.PHONY: test-e2e
test-e2e: $(HELM) $(OPENAI_CLIENT_STAMP) ## End-to-end tests (test/e2e) on the local cluster (or KUBECONFIG's): deploy, then go test -tags e2e.
	HELM=$(HELM) IMG=$(IMG) ENGINE_IMG=$(ENGINE_IMG) E2E_FLAGS="$(E2E_FLAGS)" hack/test-e2e.sh

.PHONY: test-e2e-kind
test-e2e-kind: $(HELM) $(OPENAI_CLIENT_STAMP) ## The same end-to-end tests on a kind cluster (needs Docker and kind; not runnable on the CI machines).
	HELM=$(HELM) IMG=$(IMG) ENGINE_IMG=$(ENGINE_IMG) E2E_FLAGS="$(E2E_FLAGS)" hack/test-e2e.sh --kind

.PHONY: test-e2e-vllm
test-e2e-vllm: $(HELM) ## The vllm runtime end to end on a kind cluster with real NVIDIA GPUs (needs Docker, kind/nvkind, HF_TOKEN; not runnable on the CI machines).
	HELM=$(HELM) IMG=$(IMG) ENGINE_IMG=$(ENGINE_IMG) E2E_FLAGS="$(E2E_FLAGS)" hack/test-e2e.sh --kind --vllm

##@ Tools

$(CONTROLLER_GEN):
	mkdir -p $(TOOLS_DIR)/.tmp-controller-gen
	GOBIN=$(TOOLS_DIR)/.tmp-controller-gen GOFLAGS=-buildvcs=false go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv -f $(TOOLS_DIR)/.tmp-controller-gen/controller-gen $@
	rmdir $(TOOLS_DIR)/.tmp-controller-gen

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Build the pinned controller-gen into the tool cache.

$(HELM):
	mkdir -p $(TOOLS_DIR)/.tmp-helm
	GOBIN=$(TOOLS_DIR)/.tmp-helm GOFLAGS=-buildvcs=false nice -n 10 go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv -f $(TOOLS_DIR)/.tmp-helm/helm $@
	rmdir $(TOOLS_DIR)/.tmp-helm

.PHONY: helm
helm: $(HELM) ## Build the pinned helm into the tool cache (about 2 minutes the first time).
