# Go and Java clients. Included from the top Makefile, which defines BIN (the virtualenv's
# bin folder) and GOBIN (where pinned Go tools live, $(CURDIR)/.tools/bin).

GO_MODULE := github.com/skewless/skewless/clients/go
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.1
MVN ?= mvn
MVNFLAGS ?= -q -B

.PHONY: tools-go gen-go gen-java test-go test-java

tools-go: ## Install the pinned protoc-gen-go and protoc-gen-go-grpc into .tools/bin
	@test -x $(GOBIN)/protoc-gen-go && $(GOBIN)/protoc-gen-go --version | grep -q ' $(PROTOC_GEN_GO_VERSION)$$' \
	  || GOBIN=$(GOBIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@test -x $(GOBIN)/protoc-gen-go-grpc && $(GOBIN)/protoc-gen-go-grpc --version | grep -q ' $(patsubst v%,%,$(PROTOC_GEN_GO_GRPC_VERSION))$$' \
	  || GOBIN=$(GOBIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

gen-go: tools-go ## Regenerate the Go stubs (clients/go/gen) from protos/
	rm -rf clients/go/gen
	$(BIN)/python -m grpc_tools.protoc -I protos \
	  --plugin=protoc-gen-go=$(GOBIN)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(GOBIN)/protoc-gen-go-grpc \
	  --go_out=clients/go --go_opt=module=$(GO_MODULE) \
	  --go-grpc_out=clients/go --go-grpc_opt=module=$(GO_MODULE) \
	  $(wildcard protos/skewless/v1/*.proto)

gen-java: ## Java stubs are generated at build time from protos/ (nothing to commit)
	cd clients/java && $(MVN) $(MVNFLAGS) generate-sources

test-go: ## Go client tests (live-server tests run when SKEWLESS_ADDR is set)
	cd clients/go && go vet ./... && go test ./...

test-java: ## Java client tests (live-server tests run when SKEWLESS_ADDR is set)
	cd clients/java && $(MVN) $(MVNFLAGS) verify
