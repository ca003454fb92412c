//! Build helper: writes the man pages and shell completions generated from
//! the command line definition.
//!
//!     cgtproxy-gen OUTDIR     # OUTDIR/cgtproxy.1, OUTDIR/cgtproxy-SUB.1, OUTDIR/completions/*
//!
//! clap_mangen's SUBCOMMANDS section refers to `cgtproxy-SUB(1)`, so each
//! subcommand gets that page (as git does), and the references resolve.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/gen".into()));
    std::fs::create_dir_all(out.join("completions"))?;
    let mut cmd = cgtproxy::cli::Cli::command().disable_help_subcommand(true);
    // build() gives subcommands their display names ("cgtproxy-check"),
    // which name their pages.
    cmd.build();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).source(SOURCE).render(&mut page)?;
    page.extend_from_slice(MAN_EXTRA.as_bytes());
    std::fs::write(out.join("cgtproxy.1"), page)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = clap_mangen::Man::new(sub.clone()).source(SOURCE);
        let mut page = Vec::new();
        man.render(&mut page)?;
        page.extend_from_slice(b".SH SEE ALSO\n\\fBcgtproxy\\fR(1)\n");
        std::fs::write(out.join(man.get_filename()), page)?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "cgtproxy", out.join("completions"))?;
    }
    println!("wrote {0}/cgtproxy.1, {0}/cgtproxy-*.1 and {0}/completions/", out.display());
    Ok(())
}

/// The .TH footer: package and version (clap gives subcommands none).
const SOURCE: &str = concat!("cgtproxy ", env!("CARGO_PKG_VERSION"));

/// Sections clap does not know about.
const MAN_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/cgtproxy/config.yaml\fR
The configuration, or \fI$CONFIGURATION_DIRECTORY/config.yaml\fR under systemd. A commented example is installed as \fIshare/doc/cgtproxy/example.yaml\fR; every key is described in \fIconfiguration.md\fR.
.TP
\fI/run/cgtproxy/state.json\fR
The running daemon's state, read by \fBstatus\fR and \fBreload\fR (\fI$RUNTIME_DIRECTORY\fR under systemd, \fI$CGTPROXY_STATE\fR if set).
.SH SIGNALS
.TP
\fBSIGHUP\fR
Re-read the configuration. An invalid file is refused and the running configuration stays in force; a valid one replaces the whole nftables table in one atomic transaction.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Remove the table, the policy routing rules and routes, and exit 0.
.SH KERNEL STATE
\fBtable inet cgtproxy\fR (cgroups are classified through the map \fBcgroup-class\fR), and for every tproxy mark \fBip rule fwmark MARK lookup TABLE\fR and \fBip route local default dev lo table TABLE\fR, IPv4 and IPv6. \fBcgtproxy print\fR shows the ruleset as \fBnft -f\fR input.
.SH EXIT STATUS
0 on success; 1 on errors; \fBprint --diff\fR exits 1 when the kernel differs from the configuration.
.SH SEE ALSO
\fBnft\fR(8), \fBip-rule\fR(8), \fBsystemd-run\fR(1), \fBsystemd.unit\fR(5)
"#;
