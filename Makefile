# fedid: every target a newcomer or CI needs. `make help` lists them.
CARGO ?= cargo
# Crates the domain must never depend on (docs/architecture.md, Architecture Invariant).
FORBIDDEN_IN_DOMAIN := actix actix-web diesel ureq tokio config tracing-subscriber hyper r2d2

.PHONY: help api-fuzz attack msrv-check walkthrough bench fuzz soak test test-postgres lint fmt deps-check run ci

help:
	@echo "make run            run the server on SQLite (./fedid.db, 127.0.0.1:8080)"
	@echo "make test           every test; PostgreSQL ones run when FEDID_TEST_POSTGRES_URL is set, else show as ignored"
	@echo "make test-postgres  every test, PostgreSQL at 127.0.0.1:5432 included"
	@echo "make lint           rustfmt check, clippy and cargo doc with warnings denied"
	@echo "make deps-check     prove the domain crate depends on no framework"
	@echo "make walkthrough    the README's curl walkthrough and two-server story, pasted three times each"
	@echo "make msrv-check     prove no locked dependency needs a newer Rust than rust-version"
	@echo "make bench          speed and memory figures (release, real servers, local PostgreSQL)"
	@echo "make attack         docs/security.md's attacks against a release server, each against its bound"
	@echo "make soak           64 clients for SOAK_SECONDS (60): no 5xx, no envelope lost or doubled"
	@echo "make fuzz           coverage-guided fuzzing (cargo-fuzz), FUZZ_SECONDS per target"
	@echo "make api-fuzz       schemathesis against a running server's /openapi.json"
	@echo "make ci             what CI runs: bash .ci/run"

run:
	$(CARGO) run --release -p fedid-server

ci:
	bash .ci/run

# PostgreSQL tests are #[ignore]d, so a run without a database counts them
# as ignored; with FEDID_TEST_POSTGRES_URL they run (--include-ignored).
test:
	$(CARGO) test --workspace --doc
	$(CARGO) test --workspace --all-targets $(if $(FEDID_TEST_POSTGRES_URL),-- --include-ignored,)

# The store contract against the local PostgreSQL as well (CI does this).
test-postgres:
	FEDID_TEST_POSTGRES_URL=$${FEDID_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test} $(MAKE) test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --workspace

fmt:
	$(CARGO) fmt --all

deps-check:
	@tree=$$($(CARGO) tree -p fedid-domain -e normal --prefix none --format '{p}' | awk '{print $$1}' | sort -u); \
	bad=0; for crate in $(FORBIDDEN_IN_DOMAIN); do \
	  if echo "$$tree" | grep -qx "$$crate"; then echo "fedid-domain depends on $$crate"; bad=1; fi; \
	done; \
	if [ $$bad -ne 0 ]; then exit 1; fi; \
	echo "deps-check: fedid-domain's normal dependency tree ($$(echo "$$tree" | wc -l) crates) holds none of: $(FORBIDDEN_IN_DOMAIN)"

walkthrough:
	python3 tests/readme/walkthroughs.py

msrv-check:
	python3 tests/msrv/check.py

bench:
	$(CARGO) build --release -p fedid-server -p fedid-bench
	./target/release/fedid-bench

api-fuzz:
	EXAMPLES=$${EXAMPLES:-25} bash tests/api-fuzz/run.sh

# cargo-fuzz on the stable toolchain: RUSTC_BOOTSTRAP lets it pass its -Z
# flags; no sanitizer (none is available without nightly's std).
FUZZ_TARGETS := envelope json request_bodies
fuzz:
	command -v cargo-fuzz > /dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$target; \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$target -s none corpus/$$target $$(test -d seeds/$$target && echo seeds/$$target) \
	    -- -max_total_time=$${FUZZ_SECONDS:-60} -timeout=5 || exit 1; \
	done

attack:
	$(CARGO) build --release -p fedid-server -p fedid-bench
	./target/release/fedid-bench attack

soak:
	$(CARGO) build --release -p fedid-server -p fedid-bench
	./target/release/fedid-bench soak $${SOAK_SECONDS:-60}
