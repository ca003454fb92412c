//! Drawing a [`Sample`] as the `top` screen: header lines, totals per
//! target, then the apps (or one app's connections). Pure: it draws into a
//! ratatui frame, so tests draw into a `TestBackend` buffer.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table};

use super::keys::{Sort, ViewState};
use super::model::{AppRow, Sample, TargetRow, Traffic};

/// `1.5 KiB`, `12 B`.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

pub fn rate(n: f64) -> String {
    format!("{}/s", bytes(n))
}

fn pps(n: f64) -> String {
    if n >= 100.0 || n == 0.0 { format!("{n:.0}") } else { format!("{n:.1}") }
}

fn header_lines(s: &Sample, v: &ViewState) -> Vec<Line<'static>> {
    let daemon = match &s.daemon {
        Some(d) => format!("daemon pid {} (config {})", d.pid, d.config),
        None => "no daemon".into(),
    };
    let sort = if v.sort == Sort::Rate { "rate" } else { "name" };
    let filter = match (&v.editing, v.filter.is_empty()) {
        (Some(t), _) => format!("  filter: {t}_"),
        (None, false) => format!("  filter: {}", v.filter),
        (None, true) => String::new(),
    };
    let mut lines = vec![Line::styled(
        format!(
            "cgtproxy top  {daemon}  {} apps  sort: {sort}{}{filter}",
            s.apps.len(),
            if v.group { "  grouped by target" } else { "" }
        ),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if let Some(line) = s.daemon_line() {
        lines.push(Line::styled(line, Style::new().fg(Color::Yellow)));
    }
    if let Some(why) = &s.kernel_unreadable {
        lines.push(Line::styled(
            format!("per-target and per-cgroup counters need CAP_NET_ADMIN ({why}); showing sockets and tcp_info"),
            Style::new().fg(Color::Yellow),
        ));
    } else if !s.cgroup_counters {
        lines.push(Line::raw("out: TCP payload per app (tcp_info); `counters: true` counts every packet per app"));
    }
    lines
}

fn traffic_cells(t: Option<&Traffic>) -> [String; 4] {
    match t {
        Some(t) => [pps(t.packets_per_s), rate(t.bytes_per_s), t.packets.to_string(), bytes(t.bytes as f64)],
        None => ["-".into(), "-".into(), "-".into(), "-".into()],
    }
}

fn targets_table(targets: &[TargetRow]) -> Table<'static> {
    let head = Row::new(["TARGET", "APPS", "TCP", "UDP", "OUT PKT/S", "OUT", "OUT PKTS", "OUT TOTAL"])
        .style(Style::new().add_modifier(Modifier::REVERSED));
    let rows = targets.iter().map(|t| {
        let [p, r, tp, tb] = traffic_cells(t.out.as_ref());
        Row::new([t.target.clone(), t.apps.to_string(), t.tcp.to_string(), t.udp.to_string(), p, r, tp, tb])
    });
    let widths = [14, 5, 5, 5, 9, 12, 10, 11].map(Constraint::Length);
    Table::new(rows, widths).header(head)
}

fn apps_table(rows: &[&AppRow], selected: Option<usize>) -> Table<'static> {
    let head =
        Row::new(["APP", "TARGET", "RULE", "TCP", "UDP", "OUT PKT/S", "OUT", "IN", "OUT TOTAL", "IN TOTAL", "CGROUP"])
            .style(Style::new().add_modifier(Modifier::REVERSED));
    let body = rows.iter().enumerate().map(|(i, a)| {
        let row = Row::new([
            a.name.clone(),
            a.target.clone(),
            a.rule.map_or_else(|| "-".into(), |r| r.to_string()),
            a.tcp.to_string(),
            a.udp.to_string(),
            pps(a.out.packets_per_s),
            rate(a.out.bytes_per_s),
            rate(a.inbound.bytes_per_s),
            bytes(a.out.bytes as f64),
            bytes(a.inbound.bytes as f64),
            a.path.clone(),
        ]);
        if Some(i) == selected { row.style(Style::new().add_modifier(Modifier::REVERSED)) } else { row }
    });
    let widths = [
        Constraint::Length(24),
        Constraint::Length(14),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Min(10),
    ];
    Table::new(body, widths).header(head)
}

fn conns_table(a: &AppRow) -> Table<'static> {
    let head = Row::new(["PROTO", "LOCAL", "REMOTE", "STATE", "ROUTE", "SENT", "RECEIVED"])
        .style(Style::new().add_modifier(Modifier::REVERSED));
    let opt = |b: Option<u64>| b.map_or_else(|| "-".into(), |b| bytes(b as f64));
    let body = a.conns.iter().map(|c| {
        Row::new([
            c.proto.to_string(),
            c.local.to_string(),
            c.remote.to_string(),
            c.state.to_string(),
            c.route.clone(),
            opt(c.bytes_out),
            opt(c.bytes_in),
        ])
    });
    let widths = [6, 42, 42, 11, 8, 10, 10].map(Constraint::Length);
    Table::new(body, widths).header(head)
}

/// Draw the whole screen.
pub fn draw(f: &mut Frame, s: &Sample, v: &ViewState) {
    let header = header_lines(s, v);
    let [head, targets, _, body, foot] = Layout::vertical([
        Constraint::Length(header.len() as u16),
        Constraint::Length(s.targets.len() as u16 + 1),
        Constraint::Length(1),
        Constraint::Min(2),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header), head);
    f.render_widget(targets_table(&s.targets), targets);
    let rows = v.rows(s);
    let selected = v.selected(&rows);
    let help = match (&v.editing, v.detail, selected) {
        (Some(_), _, _) => "type to filter  Enter apply  Esc cancel",
        (None, true, _) => "Esc/Enter back  q quit",
        (None, false, _) => "q quit  / filter  s sort  g group  ↑↓ select  Enter connections  Esc clear filter",
    };
    match selected {
        Some((_, app)) if v.detail => {
            let [title, table] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(body);
            let line = format!("{} ({}, {}): {} connections", app.name, app.path, app.target, app.conns.len());
            f.render_widget(Paragraph::new(Line::styled(line, Style::new().add_modifier(Modifier::BOLD))), title);
            f.render_widget(conns_table(app), table);
        }
        _ => f.render_widget(apps_table(&rows, selected.map(|(i, _)| i)), body),
    }
    f.render_widget(Paragraph::new(Line::raw(help)), foot);
}

/// A drawn buffer as text, one line per row, trailing blanks trimmed.
pub fn buffer_text(buf: &Buffer) -> String {
    let area: Rect = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The screen for `s` drawn `width` x `height`, as text (`top --once`).
pub fn text(s: &Sample, v: &ViewState, width: u16, height: u16) -> String {
    let backend = ratatui::backend::TestBackend::new(width, height);
    // A TestBackend cannot fail (its error type is Infallible).
    let mut term = ratatui::Terminal::new(backend).unwrap_or_else(|e| match e {});
    term.draw(|f| draw(f, s, v)).unwrap_or_else(|e| match e {});
    let mut text = buffer_text(term.backend().buffer());
    // A short screen need not print the blank rows below it.
    while text.ends_with("\n\n") {
        text.pop();
    }
    text
}
