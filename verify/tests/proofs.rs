//! The verifier against a reference prover written from RFC 9162's
//! definitions (PATH and PROOF, section 2.1), against ct-merkle (an
//! independent implementation from crates.io), and against the tree heads
//! of the RFC 6962 test data used by Certificate Transparency logs.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use pointstream_verify::{
    self as verify, Hash, ProofError, RootBuilder, leaf_hash, node_hash, root, verify_consistency, verify_inclusion,
};
use proptest::prelude::*;

/// MTH(D[n]) by the RFC's recursion.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => verify::empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// The largest power of two below `n` (n > 1).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// PATH(m, D[n]).
fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut proof = path(m, &leaves[..k]);
        proof.push(mth(&leaves[k..]));
        proof
    } else {
        let mut proof = path(m - k, &leaves[k..]);
        proof.push(mth(&leaves[..k]));
        proof
    }
}

/// PROOF(m, D[n]) = SUBPROOF(m, D[n], true).
fn consistency(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole { Vec::new() } else { vec![mth(leaves)] };
        }
        let k = split(n);
        if m <= k {
            let mut proof = subproof(m, &leaves[..k], whole);
            proof.push(mth(&leaves[k..]));
            proof
        } else {
            let mut proof = subproof(m - k, &leaves[k..], false);
            proof.push(mth(&leaves[..k]));
            proof
        }
    }
    if m == 0 || m == leaves.len() { Vec::new() } else { subproof(m, leaves, true) }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut flipped = *hash;
    flipped[(bit / 8) % 32] ^= 1 << (bit % 8);
    flipped
}

#[test]
fn every_inclusion_and_consistency_proof_of_small_trees_verifies() {
    let all = leaves(70);
    for n in 1..=all.len() {
        let tree = &all[..n];
        let head = mth(tree);
        assert_eq!(root(tree), head, "size {n}");
        for m in 0..n {
            let proof = path(m, tree);
            assert_eq!(verify_inclusion(m as u64, n as u64, &tree[m], &proof, &head), Ok(()), "leaf {m} of {n}");
        }
        for m in 0..=n {
            let proof = consistency(m, tree);
            let old = mth(&tree[..m]);
            assert_eq!(verify_consistency(m as u64, n as u64, &old, &head, &proof), Ok(()), "{m} -> {n}");
        }
    }
}

#[test]
fn the_root_builder_gives_every_prefix_its_root() {
    let all = leaves(1_100);
    let mut builder = RootBuilder::default();
    for (i, leaf) in all.iter().enumerate() {
        builder.push(*leaf);
        assert_eq!(builder.root(), mth(&all[..=i]), "size {}", i + 1);
    }
}

/// Tree heads of the eight-leaf test log of RFC 6962 implementations
/// (Certificate Transparency's reference code and its successors).
#[test]
fn the_rfc6962_test_tree_heads_are_reproduced() {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    let heads = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let hashes: Vec<Hash> = inputs.iter().map(|input| leaf_hash(input)).collect();
    for (n, head) in heads.iter().enumerate() {
        assert_eq!(hex::encode(root(&hashes[..=n])), *head, "size {}", n + 1);
    }
    assert_eq!(hex::encode(verify::empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

#[test]
fn proofs_from_ct_merkle_verify_and_its_roots_agree() {
    let mut tree = MemoryBackedTree::<sha2_next::Sha256, Vec<u8>>::new();
    let mut mine = RootBuilder::default();
    let mut heads = Vec::new();
    for i in 0..300u64 {
        let input = format!("event {i}").into_bytes();
        mine.push(leaf_hash(&input));
        tree.push(input);
        let theirs: Hash = tree.root().as_bytes().as_slice().try_into().unwrap();
        assert_eq!(mine.root(), theirs, "size {}", i + 1);
        heads.push(theirs);
    }
    let n = tree.len();
    for m in 0..n {
        let proof = tree.prove_inclusion(m as usize);
        let hashes: Vec<Hash> = proof.as_bytes().chunks(32).map(|c| c.try_into().unwrap()).collect();
        let leaf = leaf_hash(&tree.items()[m as usize]);
        assert_eq!(verify_inclusion(m, n, &leaf, &hashes, &heads[n as usize - 1]), Ok(()), "leaf {m}");
    }
    for m in 1..n {
        let proof = tree.prove_consistency((n - m) as usize);
        let hashes: Vec<Hash> = proof.as_bytes().chunks(32).map(|c| c.try_into().unwrap()).collect();
        assert_eq!(
            verify_consistency(m, n, &heads[m as usize - 1], &heads[n as usize - 1], &hashes),
            Ok(()),
            "{m} -> {n}"
        );
    }
}

#[test]
fn sizes_out_of_order_and_proofs_of_the_wrong_length_are_refused() {
    let all = leaves(10);
    let head = root(&all);
    let proof = path(3, &all);
    assert_eq!(verify_inclusion(10, 10, &all[3], &proof, &head), Err(ProofError::OutOfRange));
    assert_eq!(verify_inclusion(3, 10, &all[3], &proof[..proof.len() - 1], &head), Err(ProofError::WrongLength));
    let mut longer = proof.clone();
    longer.push(head);
    assert_eq!(verify_inclusion(3, 10, &all[3], &longer, &head), Err(ProofError::WrongLength));
    assert_eq!(verify_consistency(7, 5, &head, &head, &[]), Err(ProofError::OutOfRange));
    assert_eq!(verify_consistency(5, 10, &root(&all[..5]), &head, &[]), Err(ProofError::WrongLength));
    assert_eq!(verify_consistency(10, 10, &head, &flip(&head, 3), &[]), Err(ProofError::RootMismatch));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_flipped_bit_in_a_leaf_a_sibling_or_the_root_fails(
        n in 1usize..3_000, pick in any::<u64>(), bit in 0usize..256, which in any::<u64>()
    ) {
        let all = leaves(n);
        let m = (pick % n as u64) as usize;
        let head = root(&all);
        let proof = path(m, &all);
        prop_assert_eq!(verify_inclusion(m as u64, n as u64, &all[m], &proof, &head), Ok(()));
        prop_assert!(verify_inclusion(m as u64, n as u64, &flip(&all[m], bit), &proof, &head).is_err());
        prop_assert!(verify_inclusion(m as u64, n as u64, &all[m], &proof, &flip(&head, bit)).is_err());
        if !proof.is_empty() {
            // Any sibling, the middle ones included: the class of bug where
            // only a proof's ends were checked.
            let k = (which % proof.len() as u64) as usize;
            let mut altered = proof.clone();
            altered[k] = flip(&altered[k], bit);
            prop_assert!(verify_inclusion(m as u64, n as u64, &all[m], &altered, &head).is_err());
            // Another index of the same tree does not take this proof.
            let other = (m + 1 + (which as usize % n.max(2))) % n;
            if other != m {
                prop_assert!(verify_inclusion(other as u64, n as u64, &all[m], &proof, &head).is_err());
            }
        }
    }

    #[test]
    fn consistency_proofs_hold_and_any_altered_hash_fails(
        n in 2usize..3_000, pick in any::<u64>(), bit in 0usize..256, which in any::<u64>()
    ) {
        let all = leaves(n);
        let m = 1 + (pick % (n as u64 - 1)) as usize;
        let (old, new) = (root(&all[..m]), root(&all));
        let proof = consistency(m, &all);
        prop_assert_eq!(verify_consistency(m as u64, n as u64, &old, &new, &proof), Ok(()));
        prop_assert!(verify_consistency(m as u64, n as u64, &flip(&old, bit), &new, &proof).is_err());
        prop_assert!(verify_consistency(m as u64, n as u64, &old, &flip(&new, bit), &proof).is_err());
        let k = (which % proof.len() as u64) as usize;
        let mut altered = proof.clone();
        altered[k] = flip(&altered[k], bit);
        prop_assert!(verify_consistency(m as u64, n as u64, &old, &new, &altered).is_err());
        // A tree that differs in any one leaf is not an extension.
        let changed = (which as usize) % m;
        let mut forged = all.clone();
        forged[changed] = flip(&forged[changed], bit);
        prop_assert!(verify_consistency(m as u64, n as u64, &root(&forged[..m]), &new, &proof).is_err());
    }
}
