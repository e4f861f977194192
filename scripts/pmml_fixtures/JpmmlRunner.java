// Dev-only reference generator: scores a CSV with JPMML-Evaluator and prints
//   row,prediction[,p(<class>)...]
// Written for eventml; uses JPMML-Evaluator (AGPL) as a tool only, never shipped.
//
// Usage: java -cp "$(cat /tmp/jpmml.cp)" JpmmlRunner.java MODEL.pmml INPUT.csv [SEP]
// INPUT.csv has a header row of PMML field names; an empty cell is a missing value.
// Absent classes are printed as 0.0 (JPMML returns no entry for them); a missing result leaves
// the prediction empty, and a row JPMML refuses reads "ERROR <exception class>".
import java.io.BufferedReader;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

import org.dmg.pmml.OpType;
import org.jpmml.evaluator.Evaluator;
import org.jpmml.evaluator.EvaluatorUtil;
import org.jpmml.evaluator.FieldValue;
import org.jpmml.evaluator.HasProbability;
import org.jpmml.evaluator.InputField;
import org.jpmml.evaluator.LoadingModelEvaluatorBuilder;
import org.jpmml.evaluator.TargetField;

public class JpmmlRunner {

    public static void main(String[] args) throws Exception {
        Evaluator evaluator = new LoadingModelEvaluatorBuilder().load(new File(args[0])).build();
        evaluator.verify();
        String sep = args.length > 2 ? args[2] : ",";
        List<InputField> inputFields = evaluator.getInputFields();
        TargetField target = evaluator.getTargetFields().get(0);
        List<?> categories = target.getOpType() == OpType.CATEGORICAL ? target.getCategories() : null;

        StringBuilder out = new StringBuilder("row,prediction");
        if (categories != null) {
            for (Object c : categories) out.append(",p(").append(c).append(")");
        }
        out.append('\n');

        try (BufferedReader reader = Files.newBufferedReader(Paths.get(args[1]), StandardCharsets.UTF_8)) {
            String[] header = reader.readLine().split(Pattern.quote(sep), -1);
            String line;
            int row = 0;
            while ((line = reader.readLine()) != null) {
                if (line.isEmpty()) continue;
                String[] cells = line.split(Pattern.quote(sep), -1);
                Map<String, String> raw = new LinkedHashMap<>();
                for (int i = 0; i < header.length; i++) raw.put(header[i], cells[i].isEmpty() ? null : cells[i]);
                Object value;
                try {
                    Map<String, FieldValue> arguments = new LinkedHashMap<>();
                    for (InputField field : inputFields) {
                        arguments.put(field.getName(), field.prepare(raw.get(field.getName())));
                    }
                    Map<String, ?> results = evaluator.evaluate(arguments);
                    value = results.get(target.getName());
                } catch (RuntimeException exc) {
                    // an evaluation error: the row is marked so tests can expect the same refusal
                    out.append(row).append(",ERROR ").append(exc.getClass().getSimpleName()).append('\n');
                    row++;
                    continue;
                }
                Object decoded = EvaluatorUtil.decode(value);
                out.append(row).append(',').append(decoded == null ? "" : decoded);
                if (categories != null) {
                    HasProbability hp = value instanceof HasProbability ? (HasProbability) value : null;
                    for (Object c : categories) {
                        Double p = hp == null ? null : hp.getProbability(c);
                        // a missing result stays empty; an absent class of a result is 0.0
                        out.append(',').append(hp == null ? "" : p == null ? "0.0" : p.toString());
                    }
                }
                out.append('\n');
                row++;
            }
        }
        System.out.print(out);
    }
}
