fn main() {
    println!("consolidator: CLI under construction");
}
