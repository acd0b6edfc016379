//! The Merkle tree over every record the sink has accepted, as RFC 6962 and RFC 9162
//! (section 2.1) define it, with SHA-256.
//!
//! * A leaf is `SHA-256(0x00 || entry)`. For evidence, `entry` is the record's RFC 8785
//!   canonical JSON **with** its `signature`, as UTF-8: byte for byte what the sink stores
//!   and what `GET /v1/evidence/{id}` returns (see [`record_leaf_hash`]).
//! * An interior node is `SHA-256(0x01 || left || right)`.
//! * The tree over `n` leaves splits at `k`, the largest power of two smaller than `n`:
//!   `MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))`; the empty tree's hash is `SHA-256("")`.
//! * Leaves are numbered from 0 in the order the sink accepted them.
//!
//! Proofs are RFC 9162's: an inclusion proof is `PATH(m, D[n])`, leaf to root; a
//! consistency proof is `PROOF(m, D[n])`. Hashes travel as lowercase hex.
//!
//! Producing proofs needs the hashes of stored subtrees; a [`NodeSource`] gives the hash of
//! the perfect subtree at a level and index, so the store can keep those hashes (or compute
//! them) as it likes. Which nodes a proof reads depends only on the sizes, never on the
//! hashes, so a remote store can learn the set first and fetch it in one round trip.
//! Verification ([`verify_inclusion`], [`verify_consistency`]) is RFC 9162's algorithm,
//! never panics and needs nothing but the proof.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf, a node or a root.
pub type Hash = [u8; 32];

/// The byte before a leaf's entry.
pub const LEAF_PREFIX: u8 = 0x00;
/// The byte before two child hashes.
pub const NODE_PREFIX: u8 = 0x01;

/// `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// The leaf of an evidence record: [`leaf_hash`] of its canonical JSON text, signature
/// included, exactly as stored and served.
pub fn record_leaf_hash(canonical_record: &str) -> Hash {
    leaf_hash(canonical_record.as_bytes())
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The hash of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Lowercase hex of a hash.
pub fn to_hex(hash: &Hash) -> String {
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A hash from 64 hex digits (either case); `None` for anything else.
pub fn from_hex(text: &str) -> Option<Hash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(bytes.chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *byte = (hex_digit(*high)? << 4) | hex_digit(*low)?;
    }
    Some(hash)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Where stored hashes come from: the hash of the perfect subtree of `2^level` leaves
/// that starts at leaf `index * 2^level`. Level 0 is the leaves themselves.
pub trait NodeSource {
    /// Why a hash could not be read.
    type Error;

    /// The hash of the perfect subtree at `level` and `index`. The tree functions only ask
    /// for subtrees that lie wholly inside the tree size they were given.
    fn node(&mut self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a proof could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E> {
    /// The leaf index is not inside the tree.
    #[error("leaf {index} is not in a tree of {size} leaves")]
    LeafOutOfRange {
        /// The leaf asked for.
        index: u64,
        /// The tree size asked for.
        size: u64,
    },
    /// A consistency proof needs `1 <= first <= second`.
    #[error("a consistency proof needs 1 <= first <= second, got first {first}, second {second}")]
    BadSizes {
        /// The older size.
        first: u64,
        /// The newer size.
        second: u64,
    },
    /// The node source failed.
    #[error("{0}")]
    Source(E),
}

/// The largest power of two strictly smaller than `n` (`n >= 2`): the highest bit of `n - 1`.
fn split_point(n: u64) -> u64 {
    let below = n.saturating_sub(1).max(1);
    1 << (63 - below.leading_zeros())
}

/// The hash of the `n >= 1` leaves from `start`, where `start` is a multiple of the largest
/// power of two not above `n` (every range the RFC's recursion visits is).
fn range_hash<S: NodeSource>(source: &mut S, start: u64, n: u64) -> Result<Hash, S::Error> {
    if n.is_power_of_two() {
        let level = n.trailing_zeros();
        return source.node(level, start >> level);
    }
    let k = split_point(n);
    let left = range_hash(source, start, k)?;
    let right = range_hash(source, start + k, n - k)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of the first `size` leaves.
pub fn root<S: NodeSource>(source: &mut S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(source, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 2.1.3.1),
/// ordered from the leaf's sibling up to the root's child.
pub fn inclusion_proof<S: NodeSource>(
    source: &mut S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::LeafOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(source, index, 0, size, &mut proof).map_err(ProofError::Source)?;
    Ok(proof)
}

/// `PATH(m, D[start:start+n])`, appended to `proof`.
fn path<S: NodeSource>(
    source: &mut S,
    m: u64,
    start: u64,
    n: u64,
    proof: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(source, m, start, k, proof)?;
        proof.push(range_hash(source, start + k, n - k)?);
    } else {
        path(source, m - k, start + k, n - k, proof)?;
        proof.push(range_hash(source, start, k)?);
    }
    Ok(())
}

/// The consistency proof between the trees of `first` and `second` leaves (RFC 9162
/// 2.1.4.1). Empty when the sizes are equal.
pub fn consistency_proof<S: NodeSource>(
    source: &mut S,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if first == 0 || first > second {
        return Err(ProofError::BadSizes { first, second });
    }
    let mut proof = Vec::new();
    if first < second {
        subproof(source, first, 0, second, true, &mut proof).map_err(ProofError::Source)?;
    }
    Ok(proof)
}

/// `SUBPROOF(m, D[start:start+n], b)`, appended to `proof`.
fn subproof<S: NodeSource>(
    source: &mut S,
    m: u64,
    start: u64,
    n: u64,
    whole_old_tree: bool,
    proof: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if m == n {
        if !whole_old_tree {
            proof.push(range_hash(source, start, n)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(source, m, start, k, whole_old_tree, proof)?;
        proof.push(range_hash(source, start + k, n - k)?);
    } else {
        subproof(source, m - k, start + k, n - k, false, proof)?;
        proof.push(range_hash(source, start, k)?);
    }
    Ok(())
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose root is `root`
/// (RFC 9162 2.1.3.2). Any malformed input is simply `false`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf;

    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Checks that the tree of `second` leaves with root `second_root` extends the tree of
/// `first` leaves with root `first_root` (RFC 9162 2.1.4.2). Equal sizes need an empty
/// proof and equal roots; `first == 0` or `first > second` is `false`.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    let Some((head, rest)) = proof.split_first() else {
        return false;
    };

    // When the old tree is a perfect subtree, its root is the path's first value.
    let (start, rest) = if first.is_power_of_two() {
        (first_root, proof)
    } else {
        (head, rest)
    };

    let mut f = first - 1;
    let mut s = second - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = *start;
    let mut sr = *start;

    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *first_root && sr == *second_root && s == 0
}

/// A tree held in memory as its leaf hashes: a [`NodeSource`] that computes every subtree
/// from the leaves. Fine for tests and for small trees; a store keeps its nodes instead.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    /// A tree of these leaf hashes, in order.
    pub fn new(leaves: Vec<Hash>) -> Self {
        Self { leaves }
    }

    /// Adds a leaf hash at the end.
    pub fn push(&mut self, leaf: Hash) {
        self.leaves.push(leaf);
    }

    /// How many leaves.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }
}

/// Asked for a subtree that the tree does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the tree holds no subtree at level {level}, index {index}")]
pub struct MissingNode {
    /// The level asked for.
    pub level: u32,
    /// The index asked for.
    pub index: u64,
}

impl NodeSource for MemoryTree {
    type Error = MissingNode;

    fn node(&mut self, level: u32, index: u64) -> Result<Hash, MissingNode> {
        let missing = MissingNode { level, index };
        let width = 1u64.checked_shl(level).ok_or(missing.clone())?;
        let start = index.checked_mul(width).ok_or(missing.clone())?;
        let end = start.checked_add(width).ok_or(missing.clone())?;
        let start = usize::try_from(start).map_err(|_| missing.clone())?;
        let end = usize::try_from(end).map_err(|_| missing.clone())?;
        let leaves = self.leaves.get(start..end).ok_or(missing)?;
        Ok(perfect_hash(leaves))
    }
}

/// The hash of a power-of-two run of leaves.
fn perfect_hash(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let (left, right) = leaves.split_at(leaves.len() / 2);
            node_hash(&perfect_hash(left), &perfect_hash(right))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- An independent, naive reading of RFC 9162 2.1, over slices of leaf hashes ----

    fn naive_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn naive_mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => Sha256::digest(b"").into(),
            1 => d[0],
            n => {
                let k = naive_k(n);
                let mut h = Sha256::new();
                h.update([1u8]);
                h.update(naive_mth(&d[..k]));
                h.update(naive_mth(&d[k..]));
                h.finalize().into()
            }
        }
    }

    fn naive_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = naive_k(n);
        if m < k {
            let mut p = naive_path(m, &d[..k]);
            p.push(naive_mth(&d[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &d[k..]);
            p.push(naive_mth(&d[..k]));
            p
        }
    }

    fn naive_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![naive_mth(d)] };
        }
        let k = naive_k(n);
        if m <= k {
            let mut p = naive_subproof(m, &d[..k], b);
            p.push(naive_mth(&d[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &d[k..], false);
            p.push(naive_mth(&d[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("record {i}").as_bytes()))
            .collect()
    }

    /// The leaves of the Certificate Transparency test vectors.
    fn ct_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|hex| {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            leaf_hash(&bytes)
        })
        .collect()
    }

    #[test]
    fn roots_match_the_certificate_transparency_vectors() {
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut tree = MemoryTree::new(ct_leaves());

        for (size, hex) in (1..=8).zip(expected) {
            assert_eq!(to_hex(&root(&mut tree, size).unwrap()), hex, "size {size}");
        }
        assert_eq!(
            to_hex(&root(&mut tree, 0).unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn roots_and_proofs_agree_with_the_naive_definitions_for_every_small_tree() {
        let all = leaves(70);
        let mut tree = MemoryTree::new(all.clone());

        for n in 1..=all.len() {
            let d = &all[..n];
            let size = n as u64;
            let root_n = root(&mut tree, size).unwrap();
            assert_eq!(root_n, naive_mth(d), "root of {n}");

            for m in 0..n {
                let proof = inclusion_proof(&mut tree, m as u64, size).unwrap();
                assert_eq!(proof, naive_path(m, d), "PATH({m}, {n})");
                assert!(verify_inclusion(&d[m], m as u64, size, &proof, &root_n));
            }
            for m in 1..=n {
                let proof = consistency_proof(&mut tree, m as u64, size).unwrap();
                let expected = if m == n {
                    vec![]
                } else {
                    naive_subproof(m, d, true)
                };
                assert_eq!(proof, expected, "PROOF({m}, {n})");
                let old_root = naive_mth(&d[..m]);
                assert!(
                    verify_consistency(m as u64, size, &old_root, &root_n, &proof),
                    "verify PROOF({m}, {n})"
                );
            }
        }
    }

    #[test]
    fn every_altered_inclusion_proof_is_refused() {
        let all = leaves(13);
        let mut tree = MemoryTree::new(all.clone());
        let size = 13;
        let root_n = root(&mut tree, size).unwrap();

        for m in 0..13u64 {
            let proof = inclusion_proof(&mut tree, m, size).unwrap();
            let leaf = all[m as usize];
            // Another leaf, index or root. (A proof may fit another size: the hashes are
            // opaque; the signed tree head binds a root to its size.)
            let other = all[((m + 1) % 13) as usize];
            assert!(!verify_inclusion(&other, m, size, &proof, &root_n));
            assert!(!verify_inclusion(
                &leaf,
                (m + 1) % 13,
                size,
                &proof,
                &root_n
            ));
            assert!(!verify_inclusion(&leaf, m, size, &proof, &leaf));
            assert!(verify_inclusion(&leaf, m, size, &proof, &root_n));
            // Each hash flipped, one dropped, one added.
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][0] ^= 1;
                assert!(!verify_inclusion(&leaf, m, size, &bad, &root_n));
                let mut short = proof.clone();
                short.remove(i);
                assert!(!verify_inclusion(&leaf, m, size, &short, &root_n));
            }
            let mut long = proof.clone();
            long.push(leaf);
            assert!(!verify_inclusion(&leaf, m, size, &long, &root_n));
        }
        assert!(!verify_inclusion(&all[0], 13, 13, &[], &root_n));
        assert!(!verify_inclusion(&all[0], 0, 0, &[], &root_n));
    }

    #[test]
    fn every_altered_consistency_proof_is_refused() {
        let all = leaves(21);
        let mut tree = MemoryTree::new(all.clone());

        for second in 2..=21u64 {
            let second_root = root(&mut tree, second).unwrap();
            for first in 1..second {
                let first_root = root(&mut tree, first).unwrap();
                let proof = consistency_proof(&mut tree, first, second).unwrap();

                assert!(!verify_consistency(
                    first,
                    second,
                    &second_root,
                    &second_root,
                    &proof
                ));
                assert!(!verify_consistency(
                    first,
                    second,
                    &first_root,
                    &first_root,
                    &proof
                ));
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][31] ^= 0x80;
                    assert!(
                        !verify_consistency(first, second, &first_root, &second_root, &bad),
                        "{first} {second} flip {i}"
                    );
                }
                assert!(!verify_consistency(
                    first,
                    second,
                    &first_root,
                    &second_root,
                    &[]
                ));
            }
        }
        let r = root(&mut tree, 3).unwrap();
        assert!(verify_consistency(3, 3, &r, &r, &[]));
        assert!(!verify_consistency(3, 3, &r, &r, &[r]));
        assert!(!verify_consistency(0, 3, &r, &r, &[]));
        assert!(!verify_consistency(4, 3, &r, &r, &[]));
    }

    #[test]
    fn a_tree_with_one_leaf_removed_is_not_consistent_with_the_old_one() {
        let all = leaves(9);
        let mut old = MemoryTree::new(all.clone());
        let old_root = root(&mut old, 9).unwrap();
        let mut rewritten: Vec<Hash> = all.clone();
        rewritten.remove(4);
        rewritten.push(leaf_hash(b"new"));
        rewritten.push(leaf_hash(b"newer"));
        let mut new = MemoryTree::new(rewritten);
        let new_root = root(&mut new, 10).unwrap();

        let proof = consistency_proof(&mut new, 9, 10).unwrap();

        assert!(!verify_consistency(9, 10, &old_root, &new_root, &proof));
    }

    #[test]
    fn sizes_out_of_range_are_errors_not_panics() {
        let mut tree = MemoryTree::new(leaves(4));

        assert_eq!(
            inclusion_proof(&mut tree, 4, 4),
            Err(ProofError::LeafOutOfRange { index: 4, size: 4 })
        );
        assert_eq!(
            consistency_proof(&mut tree, 0, 4),
            Err(ProofError::BadSizes {
                first: 0,
                second: 4
            })
        );
        assert_eq!(
            consistency_proof(&mut tree, 5, 4),
            Err(ProofError::BadSizes {
                first: 5,
                second: 4
            })
        );
        assert!(matches!(
            root(&mut tree, 5),
            Err(MissingNode { level: 0, index: 4 })
        ));
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_a_hash() {
        let hash = leaf_hash(b"x");

        assert_eq!(from_hex(&to_hex(&hash)), Some(hash));
        assert_eq!(from_hex(&to_hex(&hash).to_uppercase()), Some(hash));
        assert_eq!(from_hex("00"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
        assert_eq!(from_hex(&"é".repeat(32)), None);
    }
}
