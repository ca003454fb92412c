//! Link options of the `cgtproxy` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Packed relative relocations (DT_RELR, glibc >= 2.36): the loader
    // reads 3 KB instead of the 218 KB .rela.dyn at every start.
    println!("cargo:rustc-link-arg-bin=cgtproxy=-Wl,-z,pack-relative-relocs");
}
