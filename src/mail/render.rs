//! What the confirmation says, as a subject, a plain-text part and an HTML part. Everything in the
//! HTML that comes from the order is escaped: the plan name is the operator's, but the lines of
//! what was granted may one day carry anything.

use std::fmt::Write;

use super::{OrderEmail, format_amount};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub fn render(email: &OrderEmail) -> RenderedEmail {
    let amount = format_amount(email.amount, &email.currency);
    RenderedEmail {
        subject: format!("Order confirmed: {}", one_line(&email.plan_name)),
        text: text(email, &amount),
        html: html(email, &amount),
    }
}

fn text(email: &OrderEmail, amount: &str) -> String {
    let mut text = format!(
        "Thank you for your order.\n\nPlan:   {}\nAmount: {amount}\nOrder:  {}\n",
        email.plan_name, email.order_id
    );
    if !email.granted.is_empty() {
        text.push_str("\nWhat you received:\n");
        for line in &email.granted {
            let _ = writeln!(text, "  - {line}");
        }
    }
    text.push_str("\nIf you contact us about this purchase, please quote the order id.\n");
    text
}

fn html(email: &OrderEmail, amount: &str) -> String {
    let row = |label: &str, value: &str| {
        format!(
            "<tr><th style=\"text-align:left;padding:4px 16px 4px 0;color:#697386;font-weight:600\">{label}</th><td style=\"padding:4px 0\">{}</td></tr>",
            escape_html(value)
        )
    };
    let granted = if email.granted.is_empty() {
        String::new()
    } else {
        let items: String = email
            .granted
            .iter()
            .map(|line| format!("<li>{}</li>", escape_html(line)))
            .collect();
        format!("<h2 style=\"font-size:16px\">What you received</h2><ul>{items}</ul>")
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:system-ui,sans-serif;color:#1a1f36;max-width:560px;margin:24px auto;padding:0 16px\">\
         <h1 style=\"font-size:20px\">Thank you for your order.</h1>\
         <table style=\"border-collapse:collapse\">{plan}{amount}{order}</table>{granted}\
         <p style=\"color:#697386\">If you contact us about this purchase, please quote the order id.</p>\
         </body></html>\n",
        title = escape_html(&format!("Order confirmed: {}", one_line(&email.plan_name))),
        plan = row("Plan", &email.plan_name),
        amount = row("Amount", amount),
        order = row("Order", &email.order_id.to_string()),
    )
}

/// A header holds one line; the subject must not end at a newline in a plan's name.
fn one_line(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text to HTML, in element content and in quoted attributes alike.
pub fn escape_html(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn order() -> OrderEmail {
        OrderEmail {
            order_id: Uuid::parse_str("3f2b8c1e-0d5a-4c39-9a57-2f1e6b7d8a90").unwrap(),
            to: "buyer@example.com".into(),
            plan_name: "100 credits".into(),
            amount: 500,
            currency: "usd".into(),
            granted: vec!["100 credits".into(), "Pro access until 2027-01-01".into()],
        }
    }

    #[test]
    fn both_parts_name_the_plan_the_amount_the_order_and_what_was_granted() {
        let email = render(&order());
        assert_eq!(email.subject, "Order confirmed: 100 credits");
        for part in [&email.text, &email.html] {
            for expected in [
                "100 credits",
                "$5.00",
                "3f2b8c1e-0d5a-4c39-9a57-2f1e6b7d8a90",
                "Pro access until 2027-01-01",
            ] {
                assert!(part.contains(expected), "{expected} missing from {part}");
            }
        }
        assert!(
            email.text.contains("  - Pro access until 2027-01-01\n"),
            "{}",
            email.text
        );
        assert!(
            email.html.contains("<li>Pro access until 2027-01-01</li>"),
            "{}",
            email.html
        );
    }

    #[test]
    fn everything_from_the_order_is_escaped_in_the_html() {
        let email = render(&OrderEmail {
            plan_name: "Pro <b>\"plus\"</b> & 'more'".into(),
            granted: vec!["<script>alert(1)</script>".into()],
            ..order()
        });
        assert!(
            !email.html.contains("<script>") && !email.html.contains("<b>"),
            "{}",
            email.html
        );
        assert!(
            email
                .html
                .contains("Pro &lt;b&gt;&quot;plus&quot;&lt;/b&gt; &amp; &#39;more&#39;")
        );
        assert!(email.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        // Plain text is not HTML: it shows the name as it is.
        assert!(email.text.contains("Pro <b>\"plus\"</b> & 'more'"));
    }

    #[test]
    fn a_plan_name_cannot_break_the_subject_line_and_nothing_granted_lists_nothing() {
        let email = render(&OrderEmail {
            plan_name: "Pro\r\nBcc: someone@example.com".into(),
            granted: Vec::new(),
            ..order()
        });
        assert_eq!(email.subject, "Order confirmed: Pro Bcc: someone@example.com");
        assert!(!email.text.contains("What you received") && !email.html.contains("What you received"));
    }
}
