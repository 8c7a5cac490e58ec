// An independent check of keyledger's checkpoints and proofs with Go's golang.org/x/mod/sumdb
// (note: C2SP signed notes; tlog: the RFC 6962/9162 tree). Reads a JSON case on stdin, prints one
// line per failed check, and exits 1 when any failed.
package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusion struct {
	Index    int64    `json:"index"`
	Size     int64    `json:"size"`
	LeafHash string   `json:"leaf_hash"`
	Hashes   []string `json:"hashes"`
}

type consistency struct {
	First  int64    `json:"first"`
	Second int64    `json:"second"`
	Hashes []string `json:"hashes"`
}

type input struct {
	Verifier    string           `json:"verifier"`
	Signer      string           `json:"signer"`
	Text        string           `json:"text"`
	Signed      string           `json:"signed"`
	ChainHashes []string         `json:"chain_hashes"`
	Roots       map[int64]string `json:"roots"`
	Inclusion   []inclusion      `json:"inclusion"`
	Consistency []consistency    `json:"consistency"`
}

var failed = false

func fail(format string, args ...any) {
	failed = true
	fmt.Printf(format+"\n", args...)
}

func hash(text string) tlog.Hash {
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(raw) != tlog.HashSize {
		fail("not a base64 hash: %q", text)
		return tlog.Hash{}
	}
	var h tlog.Hash
	copy(h[:], raw)
	return h
}

func hashes(texts []string) []tlog.Hash {
	out := make([]tlog.Hash, len(texts))
	for i, t := range texts {
		out[i] = hash(t)
	}
	return out
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("input: %v", err)
		os.Exit(1)
	}

	verifier, err := note.NewVerifier(in.Verifier)
	if err != nil {
		fail("verifier key: %v", err)
	} else if n, err := note.Open([]byte(in.Signed), note.VerifierList(verifier)); err != nil {
		fail("signed note: %v", err)
	} else if n.Text != in.Text {
		fail("signed note text: %q", n.Text)
	}
	if in.Signer != "" {
		signer, err := note.NewSigner(in.Signer)
		if err != nil {
			fail("signer key: %v", err)
		} else if signed, err := note.Sign(&note.Note{Text: in.Text}, signer); err != nil {
			fail("sign: %v", err)
		} else if string(signed) != in.Signed {
			fail("Go signs the note differently:\n%s", signed)
		}
	}

	// Go's own tree over the same leaves: its stored hashes, roots and proofs.
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, index := range indexes {
			out[i] = stored[index]
		}
		return out, nil
	})
	for n, text := range in.ChainHashes {
		data, err := hex.DecodeString(text)
		if err != nil {
			fail("chain hash %d: %v", n, err)
			continue
		}
		more, err := tlog.StoredHashes(int64(n), data, reader)
		if err != nil {
			fail("stored hashes %d: %v", n, err)
		}
		stored = append(stored, more...)
	}
	for size, root := range in.Roots {
		if h, err := tlog.TreeHash(size, reader); err != nil || h != hash(root) {
			fail("root of %d leaves: Go has %v, keyledger %s (%v)", size, h, root, err)
		}
	}
	for _, c := range in.Inclusion {
		root, _ := tlog.TreeHash(c.Size, reader)
		leaf := tlog.RecordHash(mustHex(in.ChainHashes[c.Index]))
		if leaf != hash(c.LeafHash) {
			fail("leaf hash %d differs", c.Index)
		}
		if err := tlog.CheckRecord(hashes(c.Hashes), c.Size, root, c.Index, leaf); err != nil {
			fail("inclusion of %d in %d: %v", c.Index, c.Size, err)
		}
		if proof, err := tlog.ProveRecord(c.Size, c.Index, reader); err != nil || !equal(proof, hashes(c.Hashes)) {
			fail("inclusion of %d in %d: Go proves it with other hashes (%v)", c.Index, c.Size, err)
		}
	}
	for _, c := range in.Consistency {
		old, _ := tlog.TreeHash(c.First, reader)
		root, _ := tlog.TreeHash(c.Second, reader)
		if err := tlog.CheckTree(hashes(c.Hashes), c.Second, root, c.First, old); err != nil {
			fail("consistency of %d with %d: %v", c.First, c.Second, err)
		}
		if proof, err := tlog.ProveTree(c.Second, c.First, reader); err != nil || !equal(proof, hashes(c.Hashes)) {
			fail("consistency of %d with %d: Go proves it with other hashes (%v)", c.First, c.Second, err)
		}
	}
	if failed {
		os.Exit(1)
	}
	fmt.Println("ok")
}

func mustHex(text string) []byte {
	data, _ := hex.DecodeString(text)
	return data
}

func equal(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
