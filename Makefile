# make && sudo make install [PREFIX=/usr/local] [DESTDIR=...]
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(PREFIX)/bin
MANDIR := $(PREFIX)/share/man/man1
DOCDIR := $(PREFIX)/share/doc/cgtproxy
UNITDIR ?= $(PREFIX)/lib/systemd/system
CARGO ?= cargo
GEN := target/gen

.PHONY: all build gen install uninstall test deb

all: build gen

build:
	$(CARGO) build --release --locked

gen: build
	./target/release/cgtproxy-gen $(GEN)

test:
	$(CARGO) test --locked

install: all
	install -Dm755 target/release/cgtproxy $(DESTDIR)$(BINDIR)/cgtproxy
	install -Dm644 $(GEN)/cgtproxy.1 $(DESTDIR)$(MANDIR)/cgtproxy.1
	install -Dm644 $(GEN)/completions/cgtproxy.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/cgtproxy
	install -Dm644 $(GEN)/completions/_cgtproxy $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_cgtproxy
	install -Dm644 $(GEN)/completions/cgtproxy.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/cgtproxy.fish
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|/usr/bin/cgtproxy|$(BINDIR)/cgtproxy|g' misc/systemd/cgtproxy.service > $(DESTDIR)$(UNITDIR)/cgtproxy.service
	chmod 644 $(DESTDIR)$(UNITDIR)/cgtproxy.service
	install -Dm644 misc/config/example.yaml $(DESTDIR)$(DOCDIR)/example.yaml
	install -Dm644 docs/configuration.md $(DESTDIR)$(DOCDIR)/configuration.md
	install -Dm644 docs/troubleshooting.md $(DESTDIR)$(DOCDIR)/troubleshooting.md

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/cgtproxy $(DESTDIR)$(MANDIR)/cgtproxy.1 $(DESTDIR)$(UNITDIR)/cgtproxy.service
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/cgtproxy $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_cgtproxy
	rm -f $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/cgtproxy.fish
	rm -rf $(DESTDIR)$(DOCDIR)

# Needs `cargo install cargo-deb`.
deb: all
	$(CARGO) deb --no-build
