//! A corpus of pre-encoded fedmsg messages: `[topic, canonical JSON body]` pairs
//! made by [`fedhub_tools::demo::Generator`], so the topic frame always equals the
//! body's `topic` and `i` runs 1, 2, 3, ... like one fedmsg sender's counter.
//!
//! Encoding a message costs a few microseconds, more than sending it, so a
//! corpus is built once, saved, and loaded by every publisher run. The file is
//! a magic line and then, per message, a little-endian `u32` topic length, the
//! topic, a `u32` body length and the body.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use fedhub_tools::demo::Generator;

const MAGIC: &[u8] = b"fedhub-bench corpus v1\n";

/// Messages in memory, each as a topic and a body frame.
pub struct Corpus {
    data: Vec<u8>,
    // (topic start, topic end, body end): the body starts where the topic ends
    // plus the 4-byte length.
    index: Vec<(usize, usize, usize)>,
}

impl Corpus {
    /// Generates `count` messages with `seed` (environment `dev`, so the topics are
    /// `org.fedoraproject.dev.<category>.<event>`).
    pub fn generate(count: usize, seed: u64) -> Corpus {
        let mut generator = Generator::new(seed, "org.fedoraproject", "dev");
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut corpus = Corpus {
            data: Vec::with_capacity(count * 400),
            index: Vec::with_capacity(count),
        };
        for _ in 0..count {
            let (topic, body) = generator.next_frames(timestamp);
            corpus.push(topic.as_bytes(), body.as_bytes());
        }
        corpus
    }

    /// Like [`generate`](Self::generate), each message signed by `key` as
    /// fedmsg's `sign` does (signing costs about a millisecond a message: keep
    /// the corpus small and let the publisher cycle through it).
    pub fn generate_signed(count: usize, seed: u64, key: &fedhub::SigningKey) -> Corpus {
        let plain = Corpus::generate(count, seed);
        let mut corpus = Corpus {
            data: Vec::with_capacity(count * 3200),
            index: Vec::with_capacity(count),
        };
        for k in 0..plain.len() {
            let (topic, body) = plain.frames(k);
            let mut envelope: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(body).expect("the generator writes JSON objects");
            key.sign(&mut envelope).expect("signing with a loaded key");
            let signed = fedhub::to_canonical_string(&serde_json::Value::Object(envelope));
            corpus.push(topic, signed.as_bytes());
        }
        corpus
    }

    fn push(&mut self, topic: &[u8], body: &[u8]) {
        self.data
            .extend_from_slice(&(topic.len() as u32).to_le_bytes());
        let topic_start = self.data.len();
        self.data.extend_from_slice(topic);
        let topic_end = self.data.len();
        self.data
            .extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.data.extend_from_slice(body);
        self.index.push((topic_start, topic_end, self.data.len()));
    }

    /// Writes the corpus to `path`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(file);
        out.write_all(MAGIC)?;
        out.write_all(&(self.index.len() as u64).to_le_bytes())?;
        out.write_all(&self.data)?;
        out.flush()?;
        Ok(())
    }

    /// Reads a corpus written by [`save`](Self::save).
    pub fn load(path: &Path) -> anyhow::Result<Corpus> {
        let mut raw = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .with_context(|| format!("reading corpus {}", path.display()))?;
        if !raw.starts_with(MAGIC) || raw.len() < MAGIC.len() + 8 {
            bail!("{} is not a fedhub-bench corpus", path.display());
        }
        let mut count_bytes = [0u8; 8];
        count_bytes.copy_from_slice(&raw[MAGIC.len()..MAGIC.len() + 8]);
        let count = u64::from_le_bytes(count_bytes) as usize;
        let data = raw.split_off(MAGIC.len() + 8);
        let mut index = Vec::with_capacity(count);
        let mut at = 0usize;
        let read_len = |at: usize| -> anyhow::Result<usize> {
            let bytes = data
                .get(at..at + 4)
                .with_context(|| format!("{} is truncated", path.display()))?;
            Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
        };
        for _ in 0..count {
            let topic_len = read_len(at)?;
            let topic_start = at + 4;
            let topic_end = topic_start + topic_len;
            let body_len = read_len(topic_end)?;
            let body_end = topic_end + 4 + body_len;
            if body_end > data.len() {
                bail!("{} is truncated", path.display());
            }
            index.push((topic_start, topic_end, body_end));
            at = body_end;
        }
        Ok(Corpus { data, index })
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the corpus holds no message.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Message `k` (modulo the corpus size) as `(topic, body)`.
    #[inline]
    pub fn frames(&self, k: usize) -> (&[u8], &[u8]) {
        let (topic_start, topic_end, body_end) = self.index[k % self.index.len()];
        (
            &self.data[topic_start..topic_end],
            &self.data[topic_end + 4..body_end],
        )
    }

    /// Mean body size in bytes.
    pub fn mean_body_bytes(&self) -> f64 {
        if self.index.is_empty() {
            return 0.0;
        }
        let total: usize = self.index.iter().map(|(_, te, be)| be - te - 4).sum();
        total as f64 / self.index.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_corpus_loads_identically_and_topics_agree() {
        let corpus = Corpus::generate(500, 7);
        let dir = std::env::temp_dir().join(format!("fedhub-bench-corpus-{}", std::process::id()));
        corpus.save(&dir).unwrap();
        let loaded = Corpus::load(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(loaded.len(), 500);
        for k in 0..500 {
            assert_eq!(corpus.frames(k), loaded.frames(k));
            let (topic, body) = loaded.frames(k);
            let env = fedhub::Envelope::decode(topic, body, 1 << 20).unwrap();
            assert_eq!(env.i(), Some(k as i64 + 1));
        }
        let mean = loaded.mean_body_bytes();
        assert!((200.0..600.0).contains(&mean), "mean body {mean}");
    }
}
