//! Probe: the decoding passes' work on ordinary 1 MiB texts dense with escapes (HTML lines with
//! entities, percent-escaped URLs and `page=NN` values; minified JSON with backslash escapes),
//! as a multiple of the text's size, whether the work cap stopped them, and the time of one
//! scrub. `cargo run --release -p airlock-scrub --example decode_work`.
use airlock_core::{HandleName, Secret};
use airlock_scrub::ScrubberBuilder;

fn main() {
    let mut b = ScrubberBuilder::new();
    for i in 0..20 {
        b.add_secret(&HandleName::parse(&format!("S{i}")).unwrap(), &Secret::from_str_value(&format!("sk-live-{i:04}-Zq8vN2pL7xW")));
    }
    let s = b.build();
    let mut html = String::new();
    let mut json = String::new();
    let mut i = 0u64;
    while html.len() < 1 << 20 {
        i += 1;
        html.push_str(&format!("<p class=\"item\">Tom &amp; Jerry&#39;s order #{i} &lt;shipped&gt; <a href=\"https://shop.example.com/search?q=red%20shoes&amp;page={i}&amp;sort=price%2Basc\">results for 2026-12-05</a></p>\n"));
        json.push_str(&format!("{{\"id\":{i},\"note\":\"line one\\nline two \\\"quoted\\\" caf\\u00e9\",\"url\":\"https:\\/\\/api.example.com\\/v1\\/orders\\/{i}?x=a%2Fb\",\"ts\":\"2026-12-05T10:{:02}:00Z\"}},", i % 60));
    }
    for (name, text) in [("html", &html), ("minified json", &json)] {
        let (work, exhausted) = s.decode_work(text);
        let t = std::time::Instant::now();
        let n = s.scrub_str(text).1;
        println!("{name}: {} bytes, work {:.2}x, exhausted {exhausted}, {n} redactions, {:.1} ms", text.len(), work as f64 / text.len() as f64, t.elapsed().as_secs_f64() * 1e3);
    }
}
