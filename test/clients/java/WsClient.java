// The Java client of the wsegress client matrix (test/clients/run):
// java.net.http.HttpClient's WebSocket with a ProxySelector and an
// Authenticator, as a Java 11+ service writes it.
//
//   java -Djdk.http.auth.tunneling.disabledSchemes= \
//        -Djavax.net.ssl.trustStore=truststore.p12 -Djavax.net.ssl.trustStorePassword=changeit \
//        -cp DIR WsClient session|fail URL CASE
//
// The proxy URL (http://user:pass@host:port) comes from the PROXY_URL
// environment variable. The JDK tunnels ws:// as well as wss:// with
// CONNECT, and it sends credentials only after a 407 challenge. Basic auth
// on CONNECT is disabled by default (jdk.http.auth.tunneling.disabledSchemes
// lists Basic), hence the empty property above.
// Prints one line per step: "ok STEP detail" or "fail STEP reason".

import java.net.Authenticator;
import java.net.InetSocketAddress;
import java.net.PasswordAuthentication;
import java.net.ProxySelector;
import java.net.URI;
import java.net.URLDecoder;
import java.net.http.HttpClient;
import java.net.http.WebSocket;
import java.net.http.WebSocketHandshakeException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class WsClient {
    static final String CLIENT = "java-httpclient";
    static final long STEP_SECONDS = 20;
    static boolean failed;

    static void ok(String step, String detail) {
        System.out.println("ok " + step + " " + detail);
    }

    static void fail(String step, String detail) {
        failed = true;
        System.out.println("fail " + step + " " + detail.replaceAll("\\s+", " "));
    }

    /** One thing the listener saw: a whole message, a pong, a close or an error. */
    record Event(String kind, byte[] data, int code, Throwable err) {
        String describe() {
            return kind + (data != null ? " of " + data.length + " bytes" : "")
                    + (kind.equals("close") ? " " + code : "") + (err != null ? " " + err : "");
        }
    }

    /** Collects whole messages (the JDK delivers them in parts) into a queue. */
    static final class Collector implements WebSocket.Listener {
        final BlockingQueue<Event> events = new LinkedBlockingQueue<>();
        private final StringBuilder text = new StringBuilder();
        private final java.io.ByteArrayOutputStream bin = new java.io.ByteArrayOutputStream();

        @Override
        public void onOpen(WebSocket ws) {
            ws.request(1);
        }

        @Override
        public CompletionStage<?> onText(WebSocket ws, CharSequence data, boolean last) {
            text.append(data);
            if (last) {
                events.add(new Event("text", text.toString().getBytes(StandardCharsets.UTF_8), 0, null));
                text.setLength(0);
            }
            ws.request(1);
            return null;
        }

        @Override
        public CompletionStage<?> onBinary(WebSocket ws, ByteBuffer data, boolean last) {
            byte[] b = new byte[data.remaining()];
            data.get(b);
            bin.writeBytes(b);
            if (last) {
                events.add(new Event("binary", bin.toByteArray(), 0, null));
                bin.reset();
            }
            ws.request(1);
            return null;
        }

        @Override
        public CompletionStage<?> onPong(WebSocket ws, ByteBuffer data) {
            byte[] b = new byte[data.remaining()];
            data.get(b);
            events.add(new Event("pong", b, 0, null));
            ws.request(1);
            return null;
        }

        @Override
        public CompletionStage<?> onClose(WebSocket ws, int code, String reason) {
            events.add(new Event("close", reason.getBytes(StandardCharsets.UTF_8), code, null));
            return null;
        }

        @Override
        public void onError(WebSocket ws, Throwable err) {
            events.add(new Event("error", null, 0, err));
        }

        Event next() throws InterruptedException {
            Event e = events.poll(STEP_SECONDS, TimeUnit.SECONDS);
            return e != null ? e : new Event("timeout", null, 0, null);
        }
    }

    /** The whole proxy set-up of a Java client: a ProxySelector and an Authenticator. */
    static HttpClient newClient(URI proxy) {
        String[] userInfo = proxy.getRawUserInfo().split(":", 2);
        String user = URLDecoder.decode(userInfo[0], StandardCharsets.UTF_8);
        char[] pass = URLDecoder.decode(userInfo[1], StandardCharsets.UTF_8).toCharArray();
        return HttpClient.newBuilder()
                .proxy(ProxySelector.of(new InetSocketAddress(proxy.getHost(), proxy.getPort())))
                .authenticator(new Authenticator() {
                    @Override
                    protected PasswordAuthentication getPasswordAuthentication() {
                        if (getRequestorType() != RequestorType.PROXY) {
                            return null;
                        }
                        return new PasswordAuthentication(user, pass);
                    }
                })
                .connectTimeout(Duration.ofSeconds(10))
                .build();
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3 || System.getenv("PROXY_URL") == null) {
            System.err.println("usage: PROXY_URL=http://user:pass@host:port java WsClient session|fail URL CASE");
            System.exit(2);
        }
        String mode = args[0], caseID = args[2];
        URI target = URI.create(args[1] + (args[1].contains("?") ? "&" : "?") + "case=" + caseID);
        Collector events = new Collector();
        HttpClient client = newClient(URI.create(System.getenv("PROXY_URL")));
        WebSocket ws;
        try {
            ws = client.newWebSocketBuilder()
                    .header("X-Wsegress-Test", CLIENT + "/" + caseID)
                    .header("Origin", "http://" + CLIENT + ".origin.test")
                    .subprotocols("wsegress-echo", CLIENT + ".v1")
                    .connectTimeout(Duration.ofSeconds(15))
                    .buildAsync(target, events)
                    .get(STEP_SECONDS, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (mode.equals("fail")) {
                ok("dial-fails", "status=" + statusOf(cause) + " err=\"" + cause + "\"");
                System.exit(0);
            }
            fail("connect", "handshake: " + cause);
            System.exit(1);
            return;
        }
        if (mode.equals("fail")) {
            ws.abort();
            fail("dial-fails", "handshake succeeded; want a refusal");
            System.exit(1);
        }
        session(ws, events, caseID);
        System.exit(failed ? 1 : 0);
    }

    static final Pattern STATUS = Pattern.compile("\\b([45]\\d\\d)\\b");

    /** The HTTP status behind a failed handshake, as far as the JDK reveals it. */
    static String statusOf(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof WebSocketHandshakeException h) {
                return Integer.toString(h.getResponse().statusCode());
            }
            String msg = String.valueOf(c.getMessage());
            if (msg.contains("authentication")) {
                return "407"; // "too many authentication attempts": the proxy kept answering 407
            }
            Matcher m = STATUS.matcher(msg);
            if (m.find()) {
                return m.group(1);
            }
        }
        return "unknown";
    }

    static void session(WebSocket ws, Collector events, String caseID) throws Exception {
        if (!ws.getSubprotocol().equals("wsegress-echo")) {
            fail("connect", "subprotocol \"" + ws.getSubprotocol() + "\"; want wsegress-echo");
            return;
        }
        String text = "hello from " + CLIENT + " " + caseID;
        ws.sendText(text, true).get(STEP_SECONDS, TimeUnit.SECONDS);
        Event e = events.next();
        if (!e.kind().equals("text") || !new String(e.data(), StandardCharsets.UTF_8).equals(text)) {
            fail("text-echo", "got " + e.describe());
            return;
        }
        ok("text-echo", "\"" + text + "\"");

        byte[] bin = new byte[1 << 20];
        new Random(4).nextBytes(bin);
        ws.sendBinary(ByteBuffer.wrap(bin), true).get(STEP_SECONDS, TimeUnit.SECONDS);
        e = events.next();
        if (!e.kind().equals("binary") || !Arrays.equals(e.data(), bin)) {
            fail("binary-1mib", "got " + e.describe());
            return;
        }
        ok("binary-1mib", bin.length + " bytes byte-exact");

        byte[] ping = ("ping-" + caseID).getBytes(StandardCharsets.UTF_8);
        ws.sendPing(ByteBuffer.wrap(ping)).get(STEP_SECONDS, TimeUnit.SECONDS);
        e = events.next();
        if (!e.kind().equals("pong") || !Arrays.equals(e.data(), ping)) {
            fail("ping-pong", "got " + e.describe());
            return;
        }
        ok("ping-pong", "pong \"" + new String(e.data(), StandardCharsets.UTF_8) + "\"");

        ws.sendClose(WebSocket.NORMAL_CLOSURE, "bye").get(STEP_SECONDS, TimeUnit.SECONDS);
        e = events.next();
        if (!e.kind().equals("close") || e.code() != WebSocket.NORMAL_CLOSURE) {
            fail("close-1000", "got " + e.describe());
            return;
        }
        ok("close-1000", "client got close " + e.code() + " \"" + new String(e.data(), StandardCharsets.UTF_8) + "\"");
    }
}
