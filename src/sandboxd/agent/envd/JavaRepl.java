// One Java context of the E2B code interpreter (javarepl.py): cells run one after another in one JVM through
// the JShell API with its local execution engine, so variables, methods, classes and imports live on between
// cells, and what the code prints is captured in this process. Requests come as lines on the pipe whose fd is
// args[0] ("<cell> <base64 code> <base64 key>:<base64 value>,..."), events leave as JSON lines on args[1].
//
// As E2B's Java kernel does: every write of System.out/err is its own event (println's text and its line end
// are two), the value of a cell's last expression is its result (a String as the string itself), and
// environment variables are also system properties, a cell's own ones for that cell only.
import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;

import jdk.jshell.EvalException;
import jdk.jshell.ExpressionSnippet;
import jdk.jshell.JShell;
import jdk.jshell.JShellException;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.UnresolvedReferenceException;
import jdk.jshell.VarSnippet;

public class JavaRepl {
    static PrintStream events;
    static volatile long cell = 0;

    static synchronized void emit(String json) {
        events.print(json);
        events.print('\n');
        events.flush();
    }

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
            }
        }
        return b.append('"').toString();
    }

    static void event(String type, String... fields) {
        StringBuilder b = new StringBuilder("{\"cell\":").append(cell).append(",\"type\":").append(quote(type));
        for (int i = 0; i + 1 < fields.length; i += 2) {
            b.append(',').append(quote(fields[i])).append(':').append(fields[i + 1]);
        }
        emit(b.append('}').toString());
    }

    /** Each write is an event of the running cell: text as it was written, not gathered into lines. */
    static final class Channel extends OutputStream {
        final String name;

        Channel(String name) { this.name = name; }

        @Override public void write(int b) { write(new byte[] {(byte) b}, 0, 1); }

        @Override public void write(byte[] b, int off, int len) {
            if (len > 0) event(name, "text", quote(new String(b, off, len, StandardCharsets.UTF_8)));
        }
    }

    /** A subclass, so println writes its text and its line end separately, as E2B's Java kernel shows them. */
    static PrintStream stream(String name) {
        return new PrintStream(new Channel(name), true, StandardCharsets.UTF_8) {};
    }

    /** The string a Java string literal (as JShell shows a String value) stands for. */
    static String unquote(String literal) {
        StringBuilder b = new StringBuilder();
        for (int i = 1; i < literal.length() - 1; i++) {
            char c = literal.charAt(i);
            if (c != '\\' || i + 1 >= literal.length() - 1) { b.append(c); continue; }
            char n = literal.charAt(++i);
            switch (n) {
                case 'n': b.append('\n'); break;
                case 't': b.append('\t'); break;
                case 'r': b.append('\r'); break;
                case 'b': b.append('\b'); break;
                case 'f': b.append('\f'); break;
                case 's': b.append(' '); break;
                case 'u':
                    if (i + 4 < literal.length()) { b.append((char) Integer.parseInt(literal.substring(i + 1, i + 5), 16)); i += 4; }
                    break;
                default:
                    if (n >= '0' && n <= '7') {
                        int end = i;
                        while (end + 1 < literal.length() - 1 && end - i < 2 && literal.charAt(end + 1) >= '0' && literal.charAt(end + 1) <= '7') end++;
                        b.append((char) Integer.parseInt(literal.substring(i, end + 1), 8));
                        i = end;
                    } else b.append(n);
            }
        }
        return b.toString();
    }

    static String decode(String b64) {
        return new String(Base64.getDecoder().decode(b64), StandardCharsets.UTF_8);
    }

    static String stackOf(JShellException e) {
        StringBuilder b = new StringBuilder(name(e)).append(": ").append(String.valueOf(e.getMessage()));
        for (StackTraceElement el : e.getStackTrace()) {  // up to where JShell called the cell
            String cls = el.getClassName();
            if (cls.startsWith("jdk.jshell.") || cls.startsWith("jdk.internal.reflect.") || cls.startsWith("java.lang.reflect.")) break;
            b.append("\n\tat ").append(el);
        }
        return b.toString();
    }

    static String name(JShellException e) {
        if (e instanceof EvalException) return ((EvalException) e).getExceptionClassName();
        return e.getClass().getName();
    }

    /** Runs one cell; false once an error ended it. */
    static boolean run(JShell js, String code) {
        SourceCodeAnalysis analysis = js.sourceCodeAnalysis();
        String rest = code;
        String result = null;
        while (!rest.isBlank()) {
            SourceCodeAnalysis.CompletionInfo info = analysis.analyzeCompletion(rest);
            String source;
            if (info.completeness() == SourceCodeAnalysis.Completeness.EMPTY) break;
            if (info.completeness().isComplete()) {
                source = info.source();
                rest = info.remaining();
            } else {  // let the compiler say what is wrong with it
                source = rest;
                rest = "";
            }
            result = null;
            for (SnippetEvent ev : js.eval(source)) {
                Snippet sn = ev.snippet();
                if (ev.causeSnippet() != null) continue;  // a consequence of another snippet's change
                if (ev.status() == Snippet.Status.REJECTED) {
                    String diags = js.diagnostics(sn).map(d -> d.getMessage(Locale.ROOT)).collect(Collectors.joining("\n"));
                    event("error", "name", quote("CompilationException"), "value", quote(diags),
                          "traceback", quote(diags + "\n" + sn.source()));
                    return false;
                }
                JShellException ex = ev.exception();
                if (ex != null) {
                    String value = ex instanceof UnresolvedReferenceException
                        ? "unresolved: " + js.unresolvedDependencies(((UnresolvedReferenceException) ex).getSnippet())
                              .collect(Collectors.joining(", "))
                        : String.valueOf(ex.getMessage());
                    event("error", "name", quote(name(ex)), "value", quote(value), "traceback", quote(stackOf(ex)));
                    return false;
                }
                if (ev.status() == Snippet.Status.RECOVERABLE_DEFINED || ev.status() == Snippet.Status.RECOVERABLE_NOT_DEFINED) {
                    List<String> missing = js.unresolvedDependencies((jdk.jshell.DeclarationSnippet) sn).collect(Collectors.toList());
                    if (!missing.isEmpty() && ev.status() == Snippet.Status.RECOVERABLE_NOT_DEFINED) {
                        String value = "cannot find symbol: " + String.join(", ", missing);
                        event("error", "name", quote("CompilationException"), "value", quote(value), "traceback", quote(value));
                        return false;
                    }
                }
                String type = null;
                if (sn instanceof ExpressionSnippet) type = ((ExpressionSnippet) sn).typeName();
                else if (sn instanceof VarSnippet && sn.subKind() == Snippet.SubKind.TEMP_VAR_EXPRESSION_SUBKIND) type = ((VarSnippet) sn).typeName();
                if (type != null && !type.equals("void") && ev.value() != null) {
                    String v = ev.value();
                    boolean string = (type.equals("String") || type.equals("java.lang.String")) && v.length() >= 2 && v.startsWith("\"");
                    result = string ? unquote(v) : v;
                }
            }
        }
        if (result != null) event("display", "data", "{\"text/plain\":" + quote(result) + "}");
        return true;
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(new FileInputStream("/proc/self/fd/" + args[0]), StandardCharsets.UTF_8));
        events = new PrintStream(new FileOutputStream("/proc/self/fd/" + args[1]), false, StandardCharsets.UTF_8);
        PrintStream out = stream("stdout");
        PrintStream err = stream("stderr");
        System.setOut(out);
        System.setErr(err);
        for (Map.Entry<String, String> e : System.getenv().entrySet()) {
            if (System.getProperty(e.getKey()) == null) System.setProperty(e.getKey(), e.getValue());
        }
        JShell js = JShell.builder().executionEngine("local").out(out).err(err).build();
        sun.misc.Signal.handle(new sun.misc.Signal("INT"), s -> js.stop());
        String line;
        while ((line = in.readLine()) != null) {
            Map<String, String> before = new HashMap<>();
            try {
                String[] parts = line.split(" ", -1);
                cell = Long.parseLong(parts[0]);
                if (parts.length > 2 && !parts[2].isEmpty()) {
                    for (String pair : parts[2].split(",")) {
                        String[] kv = pair.split(":", 2);
                        String key = decode(kv[0]);
                        before.putIfAbsent(key, System.getProperty(key));
                        System.setProperty(key, decode(kv[1]));
                    }
                }
                run(js, decode(parts[1]));
            } catch (RuntimeException | Error e) {
                event("error", "name", quote(e.getClass().getName()), "value", quote(String.valueOf(e.getMessage())),
                      "traceback", quote(String.valueOf(e)));
            } finally {
                for (Map.Entry<String, String> e : before.entrySet()) {
                    if (e.getValue() == null) System.clearProperty(e.getKey());
                    else System.setProperty(e.getKey(), e.getValue());
                }
                out.flush();
                err.flush();
                event("end");
            }
        }
    }
}
