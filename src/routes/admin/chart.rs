//! The activity charts as inline SVG bars: no script, no image requests. Each bar has a `<title>`
//! with its slot and value, which browsers show on hover.

use std::fmt::Write;

use super::html::esc;
use crate::admin::activity::{Activity, SLOT};

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 20.0;

/// Events received per slot.
pub fn rate_chart(activity: &Activity) -> String {
    let top = activity.max_events().max(1) as f64;
    bars(
        "webhook-rate",
        "Webhook events per 15 minutes",
        activity,
        &format!("{top}"),
        |slot| (slot.events as f64 / top, format!("{} events", slot.events)),
    )
}

/// The average lag of each slot's events (receipt minus Stripe's `created`), with the worst in
/// its title.
pub fn lag_chart(activity: &Activity) -> String {
    let top = activity.max_lag_secs().max(1.0);
    bars(
        "webhook-lag",
        "Webhook lag (seconds, average per 15 minutes)",
        activity,
        &format!("{top:.0}s"),
        |slot| match (slot.lag_avg_secs, slot.lag_max_secs) {
            (Some(avg), Some(max)) => (avg.max(0.0) / top, format!("average {avg:.1}s, worst {max:.1}s")),
            _ => (0.0, "no events".to_owned()),
        },
    )
}

fn bars(
    id: &str,
    title: &str,
    activity: &Activity,
    top_label: &str,
    value: impl Fn(&crate::store::processed_events::ActivitySlot) -> (f64, String),
) -> String {
    let plot_width = WIDTH - LEFT - 6.0;
    let plot_height = HEIGHT - BOTTOM - 18.0;
    let step = plot_width / activity.slots.len().max(1) as f64;
    let mut svg = format!(
        r##"<figure><figcaption>{}</figcaption><svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">
<text x="{}" y="22" font-size="11" text-anchor="end" fill="#556">{}</text><text x="{}" y="{}" font-size="11" text-anchor="end" fill="#556">0</text>
<line x1="{LEFT}" y1="{}" x2="{WIDTH}" y2="{}" stroke="#99a"/>"##,
        esc(title),
        esc(id),
        LEFT - 4.0,
        esc(top_label),
        LEFT - 4.0,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
    );
    for (i, slot) in activity.slots.iter().enumerate() {
        let (fraction, label) = value(slot);
        let height = (fraction.clamp(0.0, 1.0) * plot_height).max(if fraction > 0.0 { 1.0 } else { 0.0 });
        let x = LEFT + i as f64 * step + 1.0;
        let end = slot.slot_start + SLOT;
        let _ = write!(
            svg,
            r##"<rect class="bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="#3b6fb6" data-value="{}"><title>{}–{} UTC: {}</title></rect>"##,
            HEIGHT - BOTTOM - height,
            (step - 2.0).max(1.0),
            esc(&label),
            slot.slot_start.format("%H:%M"),
            end.format("%H:%M"),
            esc(&label)
        );
    }
    if let (Some(first), Some(last)) = (activity.slots.first(), activity.slots.last()) {
        let _ = write!(
            svg,
            r##"<text x="{LEFT}" y="{}" font-size="11" fill="#556">{}</text><text x="{WIDTH}" y="{}" font-size="11" text-anchor="end" fill="#556">{} UTC</text>"##,
            HEIGHT - 5.0,
            first.slot_start.format("%H:%M"),
            HEIGHT - 5.0,
            (last.slot_start + SLOT).format("%H:%M"),
        );
    }
    svg.push_str("</svg></figure>");
    svg
}
