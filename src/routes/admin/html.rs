//! HTML for the dashboard, written by hand: every value that comes from data goes through `esc`
//! (text and attribute values alike), and every page goes out with a policy that runs no script
//! at all, so a value that slipped through could not run either.

use std::fmt;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// A value HTML-escaped as it is written (`&`, `<`, `>`, `"`, `'`): safe in text and in quoted
/// attribute values.
pub struct Esc<'a>(&'a str);

pub fn esc(text: &str) -> Esc<'_> {
    Esc(text)
}

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// A value for a URL's query string, percent-encoded but for the unreserved characters (then
/// escaped where written in HTML).
pub fn query_value(text: &str) -> String {
    const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, ENCODED).to_string()
}

/// The nav shows the sign-out button only where signing in is a thing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Chrome {
    SignedIn,
    Open,
    Bare,
}

/// A whole page around `body` (already HTML), answered with `status`.
pub fn page(status: StatusCode, title: &str, chrome: Chrome, search: &str, body: &str) -> Response {
    let nav = match chrome {
        Chrome::Bare => String::new(),
        Chrome::SignedIn | Chrome::Open => format!(
            r#"<nav><a href="/admin" class="home">Entitle admin</a>
<form method="get" action="/admin/search" class="search"><input id="search" name="q" value="{}" placeholder="order id, user id, cs_, pi_, sub_, cus_ or evt_ id" size="48" autocomplete="off"><button id="search-button" type="submit">Search</button></form>
{}</nav>"#,
            esc(search),
            match chrome {
                Chrome::SignedIn =>
                    r#"<form method="post" action="/admin/logout"><button id="sign-out" type="submit">Sign out</button></form>"#,
                _ => "",
            }
        ),
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Entitle admin</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body>{nav}<main>{body}</main></body></html>\n",
        esc(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No script, no frames, forms only to ourselves; styles are inline.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Not `no-referrer`: with it browsers send `Origin: null` on our own form posts, which the
    // CSRF check must refuse.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// To the second: read by people, side by side.
pub fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt_time(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map_or_else(|| "–".to_owned(), time)
}

const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}\
nav{display:flex;gap:16px;align-items:center;padding:10px 20px;background:#1d232b;color:#fff}\
nav a.home{color:#fff;font-weight:600;text-decoration:none}nav form.search{flex:1}\
main{padding:16px 20px;max-width:1200px}h1{font-size:20px;margin:6px 0 12px}h2{font-size:16px;margin:22px 0 8px}\
table{border-collapse:collapse;background:#fff;width:100%}th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#eef0f3;font-weight:600}code{font:12px ui-monospace,monospace;background:#eef0f3;padding:1px 4px;border-radius:3px}\
.empty{color:#667}.bad{color:#b3261e}.ok{color:#1b7a3d}.cmd{white-space:nowrap}\
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;background:#fff;padding:10px;border:1px solid #dde1e6}\
dt{color:#556}dd{margin:0}svg{background:#fff;border:1px solid #dde1e6}.charts{display:flex;gap:16px;flex-wrap:wrap}\
ul.changes{margin:0;padding-left:18px}.login{max-width:420px;margin:60px auto;background:#fff;padding:20px;border:1px solid #dde1e6}\
.login input{width:100%;box-sizing:border-box;margin:6px 0 12px;padding:6px}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_character_that_could_open_markup_or_close_an_attribute_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#).to_string(),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("plain é text").to_string(), "plain é text");
        assert_eq!(esc("").to_string(), "");
    }
}
