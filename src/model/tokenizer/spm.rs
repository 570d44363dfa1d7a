//! The vocabulary of a SentencePiece `tokenizer.model`: each piece's text,
//! score and type, in id order.
//!
//! The file is a serialized `ModelProto` (sentencepiece
//! `src/sentencepiece_model.proto`): field 1 repeats `SentencePiece {piece =
//! 1 (string), score = 2 (float), type = 3 (enum, default NORMAL)}`; the
//! trainer and normalizer specs (fields 2–5) do not affect the vocabulary
//! llama.cpp's converter writes and are skipped. A small protobuf wire-format
//! reader suffices, so no protobuf dependency is needed. The checks
//! sentencepiece's loader makes (`model_interface.cc`: non-empty, unique
//! pieces, exactly one unknown piece) are made here too, so a file the
//! converter would fail on fails here.

use std::collections::HashSet;

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(v: u64) -> Option<PieceType> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: PieceType,
}

/// Protobuf wire types (the deprecated groups, 3 and 4, are refused).
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(format!("truncated varint at byte {}", self.pos));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "field of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next (field number, wire type), or None at the end.
    fn key(&mut self) -> Result<Option<(u64, u64)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some((k >> 3, k & 7)))
    }

    /// A field's payload: the bytes of a length-delimited field, the value
    /// of the others (fixed-width values as their little-endian bits).
    fn value(&mut self, wire: u64) -> Result<Field<'a>, String> {
        Ok(match wire {
            VARINT => Field::Int(self.varint()?),
            FIXED64 => Field::Int(u64::from_le_bytes(self.take(8)?.try_into().unwrap())),
            FIXED32 => Field::Int(u64::from(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap(),
            ))),
            LEN => {
                let n = self.varint()?;
                Field::Bytes(self.take(n)?)
            }
            w => return Err(format!("wire type {w} at byte {}", self.pos)),
        })
    }
}

enum Field<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

fn piece(buf: &[u8], id: usize) -> Result<Piece, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut p = Piece {
        text: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    while let Some((field, wire)) = r.key()? {
        let v = r.value(wire)?;
        match (field, wire, v) {
            (1, LEN, Field::Bytes(b)) => {
                p.text = String::from_utf8(b.to_vec())
                    .map_err(|_| format!("piece {id} is not valid UTF-8"))?
            }
            (2, FIXED32, Field::Int(bits)) => p.score = f32::from_bits(bits as u32),
            (3, VARINT, Field::Int(t)) => {
                p.kind = PieceType::from_proto(t)
                    .ok_or_else(|| format!("piece {id} has unknown type {t}"))?
            }
            (1..=3, _, _) => return Err(format!("piece {id}: field {field} has wire type {wire}")),
            _ => {}
        }
    }
    Ok(p)
}

/// The pieces of a serialized `ModelProto`, in id order.
pub fn read_pieces(buf: &[u8]) -> Result<Vec<Piece>, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut pieces = Vec::new();
    while let Some((field, wire)) = r.key()? {
        match (field, r.value(wire)?) {
            (1, Field::Bytes(b)) => pieces.push(piece(b, pieces.len())?),
            (1, Field::Int(_)) => return Err(format!("field 1 has wire type {wire}")),
            _ => {}
        }
    }
    if pieces.is_empty() {
        return Err("no vocabulary pieces".into());
    }
    let mut seen = HashSet::new();
    for (id, p) in pieces.iter().enumerate() {
        if p.text.is_empty() {
            return Err(format!("piece {id} is empty"));
        }
        if !seen.insert(p.text.as_str()) {
            return Err(format!("piece {id} {:?} is defined twice", p.text));
        }
    }
    match pieces
        .iter()
        .filter(|p| p.kind == PieceType::Unknown)
        .count()
    {
        1 => Ok(pieces),
        n => Err(format!("{n} unknown pieces (exactly one is required)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn encode(pieces: &[(&str, f32, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        // A trainer spec first, as the trainer writes it after the pieces;
        // order must not matter.
        out.extend_from_slice(&[0x12, 2, 0x08, 1]);
        for (text, score, kind) in pieces {
            let mut p = Vec::new();
            p.push(0x0a);
            varint(text.len() as u64, &mut p);
            p.extend_from_slice(text.as_bytes());
            p.push(0x15);
            p.extend_from_slice(&score.to_le_bytes());
            p.push(0x18);
            varint(*kind, &mut p);
            out.push(0x0a);
            varint(p.len() as u64, &mut out);
            out.extend_from_slice(&p);
        }
        out
    }

    #[test]
    fn reads_pieces_scores_and_every_type() {
        let buf = encode(&[
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("▁the", -1.5, 1),
            ("<|tool|>", 0.0, 4),
            ("<0x41>", 0.0, 6),
            ("gone", -7.25, 5),
        ]);
        let p = read_pieces(&buf).unwrap();
        let kinds: Vec<PieceType> = p.iter().map(|p| p.kind).collect();
        use PieceType::*;
        assert_eq!(kinds, [Unknown, Control, Normal, UserDefined, Byte, Unused]);
        assert_eq!(p[2].text, "▁the");
        assert_eq!(p[2].score, -1.5);
        assert_eq!(p[5].score, -7.25);
    }

    #[test]
    fn broken_models_are_refused_with_the_reason() {
        let good = encode(&[("<unk>", 0.0, 2), ("a", 0.0, 1)]);
        // Cut anywhere but between the two pieces: a truncated field.
        let boundary = encode(&[("<unk>", 0.0, 2)]).len();
        for cut in 1..good.len() {
            let r = read_pieces(&good[..cut]);
            assert_eq!(r.is_ok(), cut == boundary, "cut at {cut}: {r:?}");
        }
        let cases = [
            (encode(&[("a", 0.0, 1)]), "0 unknown"),
            (
                encode(&[("<unk>", 0.0, 2), ("a", 0.0, 1), ("a", 0.0, 1)]),
                "twice",
            ),
            (encode(&[("<unk>", 0.0, 2), ("", 0.0, 1)]), "empty"),
            (
                encode(&[("<unk>", 0.0, 2), ("a", 0.0, 9)]),
                "unknown type 9",
            ),
            // A tiktoken rank file (what Llama-3's original/tokenizer.model is).
            (b"IQ== 0\nIg== 1\n".to_vec(), "no vocabulary"),
            (vec![0x0b], "wire type 3"),
            (Vec::new(), "no vocabulary"),
        ];
        for (buf, want) in cases {
            let e = read_pieces(&buf).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
