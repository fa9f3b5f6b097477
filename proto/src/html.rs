//! The page frame and HTML escaping of ghatta's server-rendered pages, shared by the board's
//! cockpit and the central's office pages: a whole document with one inline stylesheet, a
//! navigation bar, no script and no external asset, so a page works offline and over an SSH
//! tunnel on a slow link.

use std::fmt::Write as _;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What frames a page: its site, navigation, stylesheet and reload.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The site's name, in the tab's title and the navigation bar ("ghatta node 3").
    pub site: &'a str,
    /// The navigation bar's links: (href, label), trusted (the program's own routes).
    pub nav: &'a [(&'a str, &'a str)],
    /// The inline stylesheet, trusted.
    pub style: &'a str,
    /// Reload the page every this many seconds (a live page); `None`: never (a form, a
    /// lookup someone is reading).
    pub refresh_s: Option<u32>,
}

impl Frame<'_> {
    /// A whole page: `title` (escaped here) over `body` (already HTML).
    pub fn page(&self, title: &str, body: &str) -> String {
        let refresh = self.refresh_s.map_or(String::new(), |s| {
            format!("<meta http-equiv=\"refresh\" content=\"{s}\">")
        });
        let mut nav = String::new();
        for (href, label) in self.nav {
            let _ = write!(nav, "<a href=\"{href}\">{label}</a>");
        }
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{refresh}\
<title>{t} - {site}</title><style>{style}</style></head><body>\
<nav><b>{site}</b> {nav}</nav><h1>{t}</h1>{body}</body></html>",
            t = escape(title),
            site = escape(self.site),
            style = self.style,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_open_a_tag_or_leave_an_attribute() {
        assert_eq!(
            escape(r#"<script>"a"&'b'"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;"
        );
        let f = Frame {
            site: "ghatta <test>",
            nav: &[("/", "Home")],
            style: "b{}",
            refresh_s: Some(5),
        };
        let p = f.page("<x>", "<p>hi</p>");
        assert!(
            p.contains("<title>&lt;x&gt; - ghatta &lt;test&gt;</title>"),
            "{p}"
        );
        assert!(p.contains("<p>hi</p>") && p.contains("<a href=\"/\">Home</a>"));
        assert!(p.contains("content=\"5\""));
        assert!(
            !Frame {
                refresh_s: None,
                ..f
            }
            .page("x", "")
            .contains("refresh")
        );
        assert!(
            !p.contains("http://") && !p.contains("https://"),
            "no external asset"
        );
    }
}
