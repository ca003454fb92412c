# make && sudo make install [PREFIX=/usr/local] [DESTDIR=...]
#
# `make` builds (as you); `make install` only copies what `make` built and
# never runs cargo, so `sudo make install` builds nothing as root. Both
# honour CARGO_TARGET_DIR. `make deb` builds the .deb with dpkg-deb
# (misc/debian/mkdeb): no cargo-deb needed.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(PREFIX)/bin
MANDIR := $(PREFIX)/share/man/man1
DOCDIR := $(PREFIX)/share/doc/cgtproxy
UNITDIR ?= $(PREFIX)/lib/systemd/system
CARGO ?= cargo
TARGET := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET)/release/cgtproxy
GEN := $(TARGET)/gen

.PHONY: all build gen install uninstall test deb built

all: build gen

build:
	$(CARGO) build --release --locked

gen: build
	$(TARGET)/release/cgtproxy-gen $(GEN)

test:
	$(CARGO) test --locked

# What install needs, checked instead of rebuilt.
built:
	@for f in $(BIN) $(GEN)/cgtproxy.1 $(GEN)/completions/cgtproxy.bash; do \
	    [ -e "$$f" ] || { echo "$$f is missing: run make (as yourself) before make install" >&2; exit 1; }; \
	done

install: built
	install -Dm755 $(BIN) $(DESTDIR)$(BINDIR)/cgtproxy
	install -d $(DESTDIR)$(MANDIR)
	install -m644 $(GEN)/cgtproxy*.1 $(DESTDIR)$(MANDIR)/
	install -Dm644 $(GEN)/completions/cgtproxy.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/cgtproxy
	install -Dm644 $(GEN)/completions/_cgtproxy $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_cgtproxy
	install -Dm644 $(GEN)/completions/cgtproxy.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/cgtproxy.fish
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|/usr/bin/cgtproxy|$(BINDIR)/cgtproxy|g' misc/systemd/cgtproxy.service > $(DESTDIR)$(UNITDIR)/cgtproxy.service
	chmod 644 $(DESTDIR)$(UNITDIR)/cgtproxy.service
	install -Dm644 misc/config/example.yaml $(DESTDIR)$(DOCDIR)/example.yaml
	install -Dm644 docs/configuration.md $(DESTDIR)$(DOCDIR)/configuration.md
	install -Dm644 docs/troubleshooting.md $(DESTDIR)$(DOCDIR)/troubleshooting.md
	install -Dm644 LICENSE $(DESTDIR)$(DOCDIR)/LICENSE

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/cgtproxy $(DESTDIR)$(MANDIR)/cgtproxy.1 $(DESTDIR)$(MANDIR)/cgtproxy-*.1 $(DESTDIR)$(UNITDIR)/cgtproxy.service
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/cgtproxy $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_cgtproxy
	rm -f $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/cgtproxy.fish
	rm -rf $(DESTDIR)$(DOCDIR)

# target/debian/cgtproxy_VERSION_ARCH.deb from what `make` built.
deb: all
	CARGO_TARGET_DIR=$(TARGET) misc/debian/mkdeb
