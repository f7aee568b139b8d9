//! The HTML page at `/statscache/`: what the API is, every plugin, and live
//! examples fetched from this hub by the page itself.

use fedhub::actix_web::HttpRequest;

use crate::engine::PluginInfo;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page, for the plugins `infos`.
pub fn render(infos: &[PluginInfo], req: &HttpRequest) -> String {
    let base = req.path().trim_end_matches('/');
    let base = if base.is_empty() { "/statscache" } else { base };
    let mut rows = String::new();
    for info in infos {
        let ident = escape(&info.ident);
        rows.push_str(&format!(
            "<tr><td><a href=\"{base}/api/{ident}?rows_per_page=10\"><code>{ident}</code></a></td><td>{}</td><td>{}</td>\
             <td><a href=\"{base}/api/{ident}/latest\">latest</a> · <a href=\"{base}/api/{ident}?format=csv&amp;rows_per_page=10\">csv</a></td></tr>\n",
            escape(&info.summary),
            escape(info.window.as_deref().unwrap_or("none")),
        ));
    }
    let example = infos.first().map(|i| escape(&i.ident)).unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>statscache API</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}code,pre{{background:#f4f4f4}}pre{{padding:.5em;overflow:auto;max-height:20em}}td{{padding:.2em .6em}}</style>
</head><body>
<h1>statscache: statistics of the message bus</h1>
<p>This hub computes statistics as messages arrive and serves them here, so that dashboards
read one cached value instead of crawling the message history.</p>
<h2>The API</h2>
<ul>
<li><code>GET {base}/api/</code>: the plugins (ident, name, summary, description, window).</li>
<li><code>GET {base}/api/&lt;ident&gt;</code>: a plugin's rows, newest first. Parameters: <code>start</code>, <code>stop</code>
(Unix seconds), <code>order</code> (<code>asc</code> or <code>desc</code>), <code>limit</code>, <code>page</code>, <code>rows_per_page</code>,
and the key column (<code>category</code>, <code>topic</code>, <code>user</code>, <code>package</code>) to keep one key. Paging in the
<code>Link</code>, <code>X-Link-Count</code> and <code>X-Link-Number</code> headers.</li>
<li><code>GET {base}/api/&lt;ident&gt;/latest</code>: the newest window's rows, or every latest value.</li>
<li><code>GET {base}/api/&lt;ident&gt;/layout</code>: the releng dashboard's layout.</li>
<li>JSON by default; JSON-P with <code>callback=NAME</code>; CSV with <code>format=csv</code> or <code>Accept: text/csv</code>. CORS is open.</li>
</ul>
<h2>Plugins on this hub</h2>
<table><tr><th>ident</th><th>summary</th><th>window</th><th></th></tr>
{rows}</table>
<h2>Live example</h2>
<p><code id="example-url">{base}/api/{example}?rows_per_page=5</code></p>
<pre id="example">loading…</pre>
<script>
fetch(document.getElementById('example-url').textContent)
  .then(function (r) {{ return r.text(); }})
  .then(function (t) {{ document.getElementById('example').textContent = t; }})
  .catch(function (e) {{ document.getElementById('example').textContent = 'error: ' + e; }});
</script>
</body></html>
"#
    )
}
