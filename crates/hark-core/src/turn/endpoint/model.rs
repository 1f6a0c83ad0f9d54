//! The learned completeness model: how likely a bubble is the last of its turn, from its text.
//!
//! A logistic regression over hashed features, small enough to ship inside the binary and fast
//! enough to run on every message (well under 50 µs; `benches/decision.rs` measures it):
//!
//! - the words of the bubble (lower-cased runs of letters, digits and apostrophes; any other
//!   character that is not white space is a token of its own), with a start and an end token,
//!   and every pair of adjacent tokens;
//! - the character 2-, 3- and 4-grams of its last 12 characters, with `^` before a bubble that
//!   short and `$` after the last character;
//! - its length in tens of characters (up to 80), its word count (up to 10), its position in the
//!   burst (first, second, … fifth or later) and its attachment kind.
//!
//! Each feature is hashed (FNV-1a, 32 bits) into one of `2^bits` weights; the logit is the sum of
//! the weights of the features present. The weights are trained on the Chit-Chat **train** split
//! by `hark sim --trace dataset.json --split train --train-completeness FILE` (`hark-sim`'s
//! `train` module: AdaGrad on the log loss, learning rate 0.01, two passes in a fixed order, then
//! rounded to 16-bit integers) and stored in `completeness.bin` beside this file, which the
//! binary includes. The same trace gives the same file, byte for byte.
//!
//! File format, little-endian: the magic `HKCM`, a `u32` version (1), a `u32` `bits`, an `f32`
//! scale, then `2^bits` `i16` weights; a weight is its integer times the scale.
//!
//! Measured on the test split (`hark sim --split test --eval-completeness`): an AUC of 0.640 for
//! "this is the last bubble of its turn", against 0.567 for the punctuation rules of
//! [`completeness`](super::completeness) and 0.602 for those rules with the position in the
//! turn. Text carries little signal in chat; the decision uses the model's probability as one
//! input among others (`completeness_model`, see `docs/turn-engine.md`).

use super::super::Attachment;

/// The model shipped with hark (`completeness.bin`).
static BUILTIN: &[u8] = include_bytes!("completeness.bin");

/// How many characters at the end of a bubble the character n-grams look at.
pub const TAIL_CHARS: usize = 12;

/// A hashed n-gram logistic model of "this bubble ends its turn". See the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct CompletenessModel {
    bits: u32,
    scale: f32,
    /// `2^bits` little-endian `i16`s.
    weights: &'static [u8],
}

/// The bytes are not a completeness model of a version this build reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadModel;

impl std::fmt::Display for BadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a completeness model (HKCM version 1)")
    }
}

impl std::error::Error for BadModel {}

impl CompletenessModel {
    /// The model built into hark.
    pub fn builtin() -> CompletenessModel {
        // The file is part of the source tree and checked by a unit test, so it always parses;
        // an empty model (every logit 0) would only make the model say nothing.
        CompletenessModel::from_bytes(BUILTIN).unwrap_or(CompletenessModel {
            bits: 0,
            scale: 0.0,
            weights: &[0, 0],
        })
    }

    /// Reads a model in the format of the module documentation.
    pub fn from_bytes(bytes: &'static [u8]) -> Result<CompletenessModel, BadModel> {
        let word = |at: usize| -> Result<[u8; 4], BadModel> {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or(BadModel)
        };
        if word(0)? != *b"HKCM" || u32::from_le_bytes(word(4)?) != 1 {
            return Err(BadModel);
        }
        let bits = u32::from_le_bytes(word(8)?);
        let scale = f32::from_le_bytes(word(12)?);
        let weights = bytes.get(16..).ok_or(BadModel)?;
        if bits > 24 || weights.len() != 2 << bits || !scale.is_finite() {
            return Err(BadModel);
        }
        Ok(CompletenessModel {
            bits,
            scale,
            weights,
        })
    }

    /// The log-odds that a bubble with this text and attachment, the `index`-th of its burst
    /// (from 0), is the last of its turn.
    pub fn logit(&self, text: &str, attachment: Option<Attachment>, index: u32) -> f64 {
        let mask = (1u32 << self.bits) - 1;
        let mut sum = 0i64;
        features(text, attachment, index, |h| {
            let i = (h & mask) as usize * 2;
            sum += i64::from(i16::from_le_bytes([self.weights[i], self.weights[i + 1]]));
        });
        sum as f64 * f64::from(self.scale)
    }

    /// The probability form of [`CompletenessModel::logit`].
    pub fn probability(&self, text: &str, attachment: Option<Attachment>, index: u32) -> f64 {
        1.0 / (1.0 + (-self.logit(text, attachment, index)).exp())
    }
}

/// Calls `emit` with the 32-bit hash of every feature of a bubble (see the module
/// documentation). The trainer in `hark-sim` uses this very function, so training and inference
/// cannot drift apart.
pub fn features(text: &str, attachment: Option<Attachment>, index: u32, mut emit: impl FnMut(u32)) {
    // One pass over the lower-cased characters, hashing as it goes: no allocation. A token's
    // unigram, its bigram with the previous token, and its own prefix for the next bigram are
    // hashed side by side; the last characters are kept in a ring for the n-grams of the tail.
    emit(Fnv::new(0).finish());
    emit(Fnv::new(1).str("<s>").finish());
    let mut prev = Fnv::new(2).str("<s>").byte(0xff);
    let mut word: Option<(Fnv, Fnv, Fnv)> = None;
    let mut words = 0u32;
    let mut ring = ['\0'; TAIL_CHARS];
    let mut count = 0usize;
    for c in text.trim().chars().flat_map(char::to_lowercase) {
        ring[count % TAIL_CHARS] = c;
        count += 1;
        if c.is_alphanumeric() || c == '\'' {
            let (uni, bi, own) = word.get_or_insert((Fnv::new(1), prev, Fnv::new(2)));
            *uni = uni.char(c);
            *bi = bi.char(c);
            *own = own.char(c);
            continue;
        }
        if let Some((uni, bi, own)) = word.take() {
            emit(uni.finish());
            emit(bi.finish());
            prev = own.byte(0xff);
            words += 1;
        }
        if !c.is_whitespace() {
            emit(Fnv::new(1).char(c).finish());
            emit(prev.char(c).finish());
            prev = Fnv::new(2).char(c).byte(0xff);
        }
    }
    if let Some((uni, bi, own)) = word.take() {
        emit(uni.finish());
        emit(bi.finish());
        prev = own.byte(0xff);
        words += 1;
    }
    emit(Fnv::new(1).str("</s>").finish());
    emit(prev.str("</s>").finish());

    // Character n-grams of the tail, with `^` when the whole bubble fits and `$` at the end.
    let mut tail = ['\0'; TAIL_CHARS + 2];
    let mut len = 0;
    if count <= TAIL_CHARS {
        tail[0] = '^';
        len = 1;
    }
    for k in count.saturating_sub(TAIL_CHARS)..count {
        tail[len] = ring[k % TAIL_CHARS];
        len += 1;
    }
    tail[len] = '$';
    len += 1;
    for n in 2..=4usize {
        for gram in tail[..len].windows(n) {
            let h = gram.iter().fold(Fnv::new(1 + n as u8), |h, &c| h.char(c));
            emit(h.finish());
        }
    }

    emit(Fnv::new(6).byte((count / 10).min(8) as u8).finish());
    emit(Fnv::new(7).byte(words.min(10) as u8).finish());
    emit(Fnv::new(8).byte(index.min(4) as u8).finish());
    if let Some(a) = attachment {
        emit(Fnv::new(9).str(a.label()).finish());
    }
}

/// FNV-1a, 32 bits, over a kind byte and the feature's bytes: stable across platforms and
/// versions, unlike `std`'s hasher.
#[derive(Clone, Copy)]
struct Fnv(u32);

impl Fnv {
    fn new(kind: u8) -> Fnv {
        Fnv(0x811c_9dc5).byte(kind)
    }

    fn byte(self, b: u8) -> Fnv {
        Fnv((self.0 ^ u32::from(b)).wrapping_mul(0x0100_0193))
    }

    fn str(self, s: &str) -> Fnv {
        s.bytes().fold(self, Fnv::byte)
    }

    fn char(self, c: char) -> Fnv {
        let mut buf = [0u8; 4];
        self.str(c.encode_utf8(&mut buf))
    }

    fn finish(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_model_parses_and_fits_the_size_budget() {
        assert!(CompletenessModel::from_bytes(BUILTIN).is_ok());
        assert!(BUILTIN.len() < 1 << 20, "the model stays under 1 MB");
    }

    #[test]
    fn features_are_stable() {
        let mut a = Vec::new();
        features("Hey, what's up?", None, 0, |h| a.push(h));
        let mut b = Vec::new();
        features("  hey, WHAT'S up?  ", None, 0, |h| b.push(h));
        assert_eq!(a, b, "case and surrounding space do not matter");
        let mut c = Vec::new();
        features("Hey, what's up?", None, 1, |h| c.push(h));
        assert_ne!(a, c, "the position in the burst is a feature");
        // The bias; `<s>`, then six tokens (hey , what's up ? </s>) each with its pair; the
        // 2-, 3- and 4-grams of ", what's up?$"; three buckets.
        assert_eq!(a.len(), 1 + 1 + 2 * 6 + (12 + 11 + 10) + 3);
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert_eq!(CompletenessModel::from_bytes(b"HKCM").err(), Some(BadModel));
        assert_eq!(
            CompletenessModel::from_bytes(b"XXXX\x01\0\0\0\0\0\0\0\0\0\0\0\0\0").err(),
            Some(BadModel)
        );
    }
}
