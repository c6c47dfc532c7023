extension Hart {
    /// F and D instructions; replaced by the SoftFloat-backed implementation.
    func executeFloat(_ d: DecodedInstruction) throws(Trap) {
        throw Trap(.illegalInstruction, tval: UInt64(d.raw))
    }
}
