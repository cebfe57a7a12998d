// The C# twin of examples/c/echo_client.c: connects, sends COUNT reliable-ordered
// messages on channel 0 (up to WINDOW in flight), checks each echo comes back once, in
// order, byte-exact, then disconnects with CODE and checks the binding refuses misuse.
//
//   mono EchoClient.exe SERVER_IP:PORT [--count N] [--size BYTES] [--window W] [--code C]
//                                     [--mtu BYTES] [--pmtud on|off]
//
// Prints `ok count=.. round_trips_per_s=.. rtt_p50_us=.. rtt_p90_us=.. .. mtu=..`; exit code 1 on failure.
using System;
using System.Diagnostics;
using Xrudp;

static class EchoClient
{
    const byte Reliable = 0;

    static void Fill(byte[] m, int size, uint seq)
    {
        for (int i = 0; i < size; i++) m[i] = (byte)(seq * 31u + (uint)i * 7u);
        m[0] = (byte)(seq >> 24); m[1] = (byte)(seq >> 16); m[2] = (byte)(seq >> 8); m[3] = (byte)seq;
    }

    static int Fail(string why)
    {
        Console.Error.WriteLine("EchoClient: " + why);
        return 1;
    }

    static int Main(string[] args)
    {
        if (args.Length < 1) return Fail("usage: EchoClient SERVER_IP:PORT [--count N] [--size BYTES] [--window W] [--code C] [--mtu BYTES] [--pmtud on|off]");
        uint count = 1000, window = 1;
        int size = 64;
        ushort code = 42;
        uint mtu = 0;
        var pmtud = Pmtud.On;
        for (int i = 1; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--count": count = uint.Parse(args[i + 1]); break;
                case "--size": size = int.Parse(args[i + 1]); break;
                case "--window": window = uint.Parse(args[i + 1]); break;
                case "--code": code = ushort.Parse(args[i + 1]); break;
                case "--mtu": mtu = uint.Parse(args[i + 1]); break;
                case "--pmtud": pmtud = args[i + 1] == "off" ? Pmtud.Off : Pmtud.On; break;
                default: return Fail("unknown option " + args[i]);
            }
        }
        if (size < 4 || size > 1024 || window == 0 || count == 0) return Fail("need 4 <= size <= 1024, window >= 1, count >= 1");

        var clock = Stopwatch.StartNew();
        Func<long> us = () => clock.ElapsedTicks * 1000000L / Stopwatch.Frequency;
        var sentAt = new long[count];
        var rtt = new long[count];
        var msg = new byte[size];
        var want = new byte[size];
        var buf = new byte[1024];
        uint nextSend = 0, nextRecv = 0;
        bool connected = false, disconnecting = false, closed = false;
        long start = 0, end = 0, deadline = us() + 60000000L;
        ulong raw;
        Stats stats;
        Stats live = new Stats();
        using (var conn = Connection.Connect(args[0], mtu: mtu, pmtud: pmtud))
        {
            raw = conn.RawHandle;
            while (!closed)
            {
                if (us() > deadline) return Fail("timed out: connected=" + connected + ", " + nextRecv + "/" + count + " echoes");
                while (connected && !disconnecting && nextSend < count && nextSend - nextRecv < window)
                {
                    Fill(msg, size, nextSend);
                    if (conn.Send(Reliable, msg, size) == Status.QueueFull) break;
                    sentAt[nextSend++] = us();
                }
                conn.Wait(100);
                Event ev;
                while (conn.NextEvent(out ev, buf))
                {
                    switch (ev.Kind)
                    {
                        case EventKind.Connected:
                            connected = true;
                            start = us();
                            break;
                        case EventKind.Message:
                            long t = us();
                            if (nextRecv >= nextSend) return Fail("an echo nobody asked for after " + nextRecv);
                            Fill(want, size, nextRecv);
                            bool same = ev.Channel == Reliable && ev.Len == (ulong)size;
                            for (int i = 0; same && i < size; i++) same = buf[i] == want[i];
                            if (!same) return Fail("echo " + nextRecv + " differs (channel " + ev.Channel + ", " + ev.Len + " bytes)");
                            rtt[nextRecv] = t - sentAt[nextRecv];
                            if (++nextRecv == count)
                            {
                                end = t;
                                // The connection's quality while it is up (RTT figures are 0 once closed).
                                live = conn.GetStats();
                                conn.Disconnect(code);
                                disconnecting = true;
                            }
                            break;
                        case EventKind.Disconnected:
                            if (ev.Reason != Reason.Local || ev.ReasonCode != code || nextRecv != count)
                                return Fail("disconnected early: " + ev.Reason + " code " + ev.ReasonCode + " after " + nextRecv + "/" + count);
                            closed = true;
                            break;
                    }
                }
            }
            stats = conn.GetStats();
            // Misuse through the binding: sending on a closed connection is an error code.
            try { conn.Send(Reliable, msg, size); return Fail("send after disconnect did not throw"); }
            catch (XrudpException e) { if (e.Status != Status.NotConnected) return Fail("send after disconnect: " + e.Message); }
        }
        // Disposed: the handle was freed exactly once; freeing it again is refused.
        var again = Connection.FreeRaw(raw);
        if (again != Status.InvalidHandle) return Fail("second free returned " + again);

        Array.Sort(rtt);
        double secs = (end - start) / 1e6;
        Console.WriteLine("ok count=" + count + " round_trips_per_s=" + (secs > 0 ? (long)(count / secs) : 0)
            + " rtt_p50_us=" + rtt[(count * 50 + 99) / 100 - 1] + " rtt_p90_us=" + rtt[(count * 90 + 99) / 100 - 1]
            + " packets_out=" + stats.PacketsOut + " lost=" + stats.LostPackets
            + " min_rtt_us=" + live.MinRttUs + " jitter_us=" + live.JitterUs
            + " mtu=" + live.Mtu + " pmtu_probes=" + stats.PmtuProbes);
        return 0;
    }
}
